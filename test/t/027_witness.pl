# 027_witness.pl: witnesses cosign the newest seal of other nodes, so that
# removing or rewriting the newest seals, which nothing left inside one
# database shows, is seen.  Three nodes: population publishes, land
# consumes (so both have records to seal), tax witnesses both.  Proves:
#  - add_witness() refuses the node itself and an unknown peer, with the
#    hint to add the peer;
#  - the sync worker sends each new newest seal to the witness, which
#    stores it and cosigns it; the node stores the cosignature, which
#    verifies against the witness's certificate and names the seal by
#    its hash, and verify_log() is clean;
#  - the evidence of an exchange carries that cosignature, and node's
#    crypto, jose and openssl verify it (and refuse it changed);
#  - a witness removed and added again is told where it stopped
#    (witness_gap) and cosigns the new head without an alarm;
#  - a superuser deletes the newest, cosigned, seal of population:
#    verify_log() names it as cosigned and missing, and at the next seal
#    the witness raises an alarm (a row with the node's signed request, a
#    WARNING, interop_witness_alarms_total) and refuses with
#    head_inconsistent, which population records;
#  - a superuser rewrites land's newest seal, signed again with the node
#    key under the same id: verify_log() names it as rewritten, and the
#    witness raises an alarm naming both hashes;
#  - a request to cosign that does not verify gets a signed 400, and
#    changes nothing.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use InteropTest;
use MIME::Base64;
use JSON::PP;

my $dir = PostgreSQL::Test::Utils::tempdir();
my $ca = federation_ca($dir);
my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $LAND = 'MN/GOV/3000003/land';
my $pop = new_node('population', $POP, $ca, 'interop.seal_interval' => "'1s'");
my $tax = new_node('tax', $TAX, $ca);
my $land = new_node('land', $LAND, $ca, 'interop.seal_interval' => "'1s'", 'interop.gateway_workers' => 0);
$pop->safe_psql('postgres', qq{
	CREATE TABLE person (id text PRIMARY KEY, name text);
	INSERT INTO person VALUES ('P1', 'Person 1');
	SELECT interop.publish('person', 'person', filter_columns => '{id}');
	SELECT interop.grant_access('person', '$LAND');
	SELECT interop.add_peer('$TAX', '@{[gateway_url($tax)]}');});
$land->safe_psql('postgres', qq{
	SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}');
	SELECT interop.add_peer('$TAX', '@{[gateway_url($tax)]}');});
wait_for_gateway($pop, "$ca/fedroot/ca.crt", $land) or die 'the gateway of population did not start';
wait_for_gateway($tax, "$ca/fedroot/ca.crt", $pop) or die 'the gateway of tax did not start';
my $query = qq{SELECT q->>'name' FROM interop.query('$POP', 'person', '{"id":"P1"}') q};
is($land->safe_psql('postgres', $query), 'Person 1', 'an exchange');
my ($ok, $out, $err);

# clear errors for what cannot be a witness
($ok, $out, $err) = $pop->psql('postgres', "SELECT interop.add_witness('$POP')");
like($err, qr/a node cannot be its own witness/, 'a node is not its own witness');
($ok, $out, $err) = $pop->psql('postgres', "SELECT interop.add_witness('MN/GOV/9000009/nobody')", extra_params => ['-v', 'VERBOSITY=verbose']);
like($err, qr/42704.*peer "MN\/GOV\/9000009\/nobody" is not known.*HINT:.*interop\.add_peer/s,
	'an unknown peer is refused with the hint to add it');
($ok, $out, $err) = $pop->psql('postgres', "SELECT interop.remove_witness('$TAX')");
like($err, qr/witness "\Q$TAX\E" is not known/, 'removing a witness that is not one is refused');

# the newest seal is cosigned
$pop->safe_psql('postgres', "SELECT interop.add_witness('$TAX')");
$land->safe_psql('postgres', "SELECT interop.add_witness('$TAX')");
my $cosigned = qq{SELECT (SELECT max(seal_id) FROM interop.cosignature WHERE witness::text = '$TAX')
	= (SELECT max(id) FROM interop.log_seal)};
ok($pop->poll_query_until('postgres', $cosigned), 'population\'s newest seal is cosigned by tax');
ok($land->poll_query_until('postgres', $cosigned), 'land\'s newest seal is cosigned by tax');
$land->safe_psql('postgres', $query) for 1 .. 5;
$pop->safe_psql('postgres', 'SELECT interop.seal_log()');
ok($pop->poll_query_until('postgres', $cosigned), 'the seals of new exchanges are cosigned');
my ($seal, $head) = split /\|/, $pop->safe_psql('postgres',
	"SELECT seal_id, head FROM interop.cosignature ORDER BY seal_id DESC LIMIT 1");
is($tax->safe_psql('postgres', "SELECT head FROM interop.witnessed_head WHERE node::text = '$POP' AND seal_id = $seal"),
	$head, 'the witness keeps the head it cosigned');
is($tax->safe_psql('postgres', "SELECT seal FROM interop.witnessed_head WHERE node::text = '$POP' AND seal_id = $seal"),
	$pop->safe_psql('postgres', "SELECT jws FROM interop.log_seal WHERE id = $seal"),
	'and the seal as the node signed it');
is($pop->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0', 'verify_log() checks the cosignatures');
# The evidence of an exchange carries the witness's cosignature of a later
# head, verified with node's crypto, jose and openssl alone.
my $message = $pop->safe_psql('postgres', q{
	SELECT max(id) FROM interop.message_log WHERE direction = 'in' AND status = 200});
spew("$dir/evidence.json", $pop->safe_psql('postgres', "SELECT interop.evidence($message)"));
mkdir "$dir/ev";
my $verifier = "NODE_PATH=/usr/share/nodejs node $TOP/test/evidence/verify-evidence.cjs";
my $checked = `$verifier $dir/evidence.json $dir/ev 2>&1`;
is($?, 0, 'the evidence of an exchange verifies with its cosignature') or diag($checked);
like($checked, qr/^\Q$TAX\E cosigned seal \d+ of the chain \(ES256\), which follows the record's seal$/m,
	'the witness cosigned a head the record\'s seal leads to');
like(`openssl verify -CAfile $ca/fedroot/ca.crt -untrusted $dir/ev/cosignature-0.chain.pem $dir/ev/cosignature-0.leaf.pem 2>&1`,
	qr/: OK$/m, 'openssl verify: the witness\'s certificate chains to the federation\'s root');
my $doc = JSON::PP::decode_json(slurp("$dir/evidence.json"));
is(scalar @{ $doc->{cosignatures} }, 1, 'one cosignature: tax is population\'s only witness');
$doc->{cosignatures}[0]{jws} =~ s/\.(.)([^.]*)$/'.' . ($1 eq 'A' ? 'B' : 'A') . $2/e;
spew("$dir/forged.json", JSON::PP::encode_json($doc));
like(`$verifier $dir/forged.json $dir/ev 2>&1`, qr/evidence refused: /, 'a changed cosignature is refused');
my $cos = $pop->safe_psql('postgres', "SELECT jws FROM interop.cosignature WHERE seal_id = $seal");
my ($h64) = split /\./, $cos;
like(MIME::Base64::decode_base64url($h64), qr/"typ":"interop-cosignature"/, 'a cosignature is a JWS of its own typ');
my ($code, $body) = curl_gateway($pop, '/metrics', as => $tax);
like($body, qr/^interop_cosignature_age_seconds\{witness="\Q$TAX\E"\} [0-9.]+$/m, 'the age of the newest cosignature is a metric');
($code, $body) = curl_gateway($tax, '/metrics', as => $pop);
like($body, qr/^interop_witness_alarms_total 0$/m, 'no alarm on the witness');
like($body, qr/^interop_witnessed_head_age_seconds\{node="\Q$POP\E"\} [0-9.]+$/m, 'the age of each witnessed head is a metric');

# a witness removed and added again: told where it stopped, no alarm
$land->safe_psql('postgres', "SELECT interop.remove_witness('$TAX')");
for (1 .. 3)
{
	$land->safe_psql('postgres', $query);
	$land->safe_psql('postgres', 'SELECT interop.seal_log()');
}
$land->safe_psql('postgres', "SELECT interop.add_witness('$TAX')");
ok($land->poll_query_until('postgres', $cosigned), 'a witness added again cosigns the new head');
is($tax->safe_psql('postgres', 'SELECT count(*) FROM interop.witness_alarm'), '0', 'without an alarm');

# A superuser deletes population's newest seal, which tax cosigned.
$pop->safe_psql('postgres', 'SELECT interop.seal_log()');
ok($pop->poll_query_until('postgres', $cosigned), 'every seal of population is cosigned');
my $newest = $pop->safe_psql('postgres', 'SELECT max(id) FROM interop.log_seal');
$pop->safe_psql('postgres', qq{
	ALTER TABLE interop.log_seal DISABLE TRIGGER log_seal_append_only;
	DELETE FROM interop.log_seal WHERE id = $newest;
	ALTER TABLE interop.log_seal ENABLE TRIGGER log_seal_append_only;});
like($pop->safe_psql('postgres', "SELECT problem FROM interop.verify_log() WHERE log = 'log_seal' AND record_id = $newest"),
	qr/seal $newest is missing: witness \Q$TAX\E cosigned it/, 'verify_log() names the cosigned seal that is missing');
$land->safe_psql('postgres', $query);
ok($tax->poll_query_until('postgres', "SELECT count(*) > 0 FROM interop.witness_alarm WHERE node::text = '$POP'"),
	'the witness raises an alarm at the next seal');
like($tax->safe_psql('postgres', "SELECT problem FROM interop.witness_alarm WHERE node::text = '$POP'"),
	qr/no longer holds seal $newest/, 'it names the seal that is gone');
is($tax->safe_psql('postgres', "SELECT witnessed_seal FROM interop.witness_alarm WHERE node::text = '$POP'"),
	$newest, 'and the head it had cosigned');
my $request = $tax->safe_psql('postgres', "SELECT request FROM interop.witness_alarm WHERE node::text = '$POP'");
like($pop->safe_psql('postgres', "SELECT (interop.verify(\$\$$request\$\$))::text"), qr/"iss": "\Q$POP\E"/,
	'the alarm keeps the node\'s own signed request');
ok($pop->poll_query_until('postgres', "SELECT last_error LIKE '%head_inconsistent%' FROM interop.witness_status"),
	'population records the refusal');
($code, $body) = curl_gateway($tax, '/metrics', as => $pop);
like($body, qr/^interop_witness_alarms_total 1$/m, 'the alarm is counted');
like(slurp($tax->logfile), qr/WARNING:  interop witness: the seals of "\Q$POP\E" do not extend the head this node cosigned/,
	'and written to the witness\'s server log');
is($tax->safe_psql('postgres', "SELECT max(seal_id) FROM interop.witnessed_head WHERE node::text = '$POP'"), $newest,
	'the witness cosigns nothing after the alarm');

# A superuser rewrites land's newest seal: the records it covered removed,
# and the seal made again, signed with the node key, under the same id.
$land->safe_psql('postgres', $query) for 1 .. 2;
$land->safe_psql('postgres', 'SELECT interop.seal_log()');
ok($land->poll_query_until('postgres', $cosigned), 'every seal of land is cosigned');
my ($lnewest, $upto, $after) = split /\|/, $land->safe_psql('postgres',
	'SELECT id, upto_id, after_id FROM interop.log_seal ORDER BY id DESC LIMIT 1');
my $old = $land->safe_psql('postgres', "SELECT head FROM interop.cosignature WHERE seal_id = $lnewest");
$land->safe_psql('postgres', qq{
	ALTER TABLE interop.log_seal DISABLE TRIGGER log_seal_append_only;
	ALTER TABLE interop.message_log DISABLE TRIGGER message_log_append_only;
	DELETE FROM interop.log_seal WHERE id = $lnewest;
	DELETE FROM interop.message_log WHERE id = (SELECT max(id) FROM interop.message_log WHERE id <= $upto);
	ALTER TABLE interop.message_log ENABLE TRIGGER message_log_append_only;
	ALTER TABLE interop.log_seal ENABLE TRIGGER log_seal_append_only;
	SELECT setval('interop.log_seal_id_seq', $lnewest - 1);
	SELECT interop.seal_log();});
is($land->safe_psql('postgres', "SELECT count(*) FROM interop.log_seal WHERE id = $lnewest"),
	'1', "seal $lnewest is made again, over one record less");
like($land->safe_psql('postgres', "SELECT problem FROM interop.verify_log() WHERE log = 'log_seal' AND record_id = $lnewest"),
	qr/seal $lnewest is not the seal witness \Q$TAX\E cosigned at .*: it was rewritten \(its hash was \Q$old\E/,
	'verify_log() names the rewritten seal');
# the witness sees it when the next seal is sent
$land->safe_psql('postgres', $query);
$land->safe_psql('postgres', 'SELECT interop.seal_log()');
ok($tax->poll_query_until('postgres', "SELECT count(*) > 0 FROM interop.witness_alarm WHERE node::text = '$LAND'"),
	'the witness raises an alarm');
like($tax->safe_psql('postgres', "SELECT problem FROM interop.witness_alarm WHERE node::text = '$LAND'"),
	qr/seal $lnewest of "\Q$LAND\E" is not the seal cosigned at .*: its hash was \Q$old\E, it is now/,
	'naming the seal and both hashes');

# a request that does not verify: a signed 400, nothing stored
my $before = $tax->safe_psql('postgres', 'SELECT count(*) FROM interop.witnessed_head');
($code, $body) = curl_gateway($tax, '/v1/cosign', as => $pop, body => 'not.a.jws');
is($code, '400', 'a request to cosign that is not a JWS gets 400');
my ($eh) = split /\./, $body;
like(MIME::Base64::decode_base64url($eh), qr/"typ":"interop-response"/, 'a signed refusal');
my $signed = $pop->safe_psql('postgres', qq{SELECT interop.sign('{"iss":"$POP","seals":[]}')});
($code, $body) = curl_gateway($tax, '/v1/cosign', as => $pop, body => $signed);
like($code, qr/^40[01]$/, 'a JWS of another typ is refused');
is($tax->safe_psql('postgres', 'SELECT count(*) FROM interop.witnessed_head'), $before, 'and nothing is stored');

done_testing();
