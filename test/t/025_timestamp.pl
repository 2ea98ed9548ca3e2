# 025_timestamp.pl: RFC 3161 timestamps on seals.  The TSA is "openssl ts
# -reply" behind a small HTTP server on loopback, its certificate issued by
# the federation's CA for time stamping only.  Proves:
#  - the sync worker timestamps the newest seal of each sealing round, one
#    request per round however many exchanges it sealed, and stores the
#    token only after checking it; interop.verify_log() checks it again;
#  - an exported token verifies with "openssl ts -verify" alone, against
#    the seal's JWS and the federation's root;
#  - with the TSA down: failures are recorded and backed off, metrics show
#    the gap, and past interop.max_timestamp_gap the gateway refuses
#    exchanges with 503 not_timestamped (and /v1/health says not ready),
#    verify_log() names the seals without a timestamp;
#  - a TSA whose certificate does not chain to an anchor is refused and
#    nothing is stored; once the real TSA is back the exchanges resume, and
#    verify_log() names the seals timestamped later than the gap;
#  - tokens put into interop.seal_timestamp by a superuser: one copied from
#    another seal, one from an untrusted TSA, are named by verify_log();
#  - interop.evidence() of an exchange verifies with node's crypto and jose
#    (test/evidence/verify-evidence.cjs) and openssl alone, and a changed
#    document does not; after prune_log() the same document comes from
#    interop.log_archive.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use InteropTest;
use MIME::Base64;
use Time::HiRes qw(usleep);

my $dir = PostgreSQL::Test::Utils::tempdir();
my $ca = federation_ca($dir);
sh("$TESTCA tsa $ca issuing $dir/tsa");
# a TSA of a CA nobody here trusts
sh("$TESTCA root $ca otherroot");
sh("$TESTCA tsa $ca otherroot $dir/impostor 'impostor tsa'");
mkdir "$dir/real";
mkdir "$dir/fake";
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $url = "http://127.0.0.1:$port";
my $tsa = serve_tsa($port, "$dir/real", "$dir/tsa", "$ca/issuing/ca.crt");
END { stop_child($tsa) }

my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $pop = new_node('population', $POP, $ca,
	'interop.seal_interval' => "'1s'", 'interop.tsa_url' => "'$url'");
my $tax = new_node('tax', $TAX, $ca, 'interop.gateway_workers' => 0);
$pop->safe_psql('postgres', qq{
	CREATE TABLE person (id text PRIMARY KEY, name text);
	INSERT INTO person VALUES ('P1', 'Person 1');
	SELECT interop.publish('person', 'person', filter_columns => '{id}');
	SELECT interop.grant_access('person', '$TAX');});
$tax->safe_psql('postgres', "SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}')");
wait_for_gateway($pop, "$ca/fedroot/ca.crt", $tax) or die 'the gateway did not start';
my $query = qq{SELECT q->>'name' FROM interop.query('$POP', 'person', '{"id":"P1"}') q};
is($tax->safe_psql('postgres', $query), 'Person 1', 'an exchange');
my ($ok, $out, $err);

# every seal is covered by a token over itself or a later seal
my $covered = q{SELECT count(*) > 0 AND (SELECT max(id) FROM interop.log_seal) <= max(seal_id)
	FROM interop.seal_timestamp};
ok($pop->poll_query_until('postgres', $covered), 'the sync worker timestamps the newest seal');
is($pop->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0', 'verify_log() checks the tokens');
like($pop->safe_psql('postgres', 'SELECT tsa FROM interop.seal_timestamp LIMIT 1'), qr/time stamping authority/,
	'the token names the TSA that signed it');

# Thirty exchanges are timestamped by one request per sealing round.
my $requests0 = slurp("$dir/real/tsa.count");
my $seals0 = $pop->safe_psql('postgres', 'SELECT max(id) FROM interop.log_seal');
$tax->safe_psql('postgres', $query) for 1 .. 30;
ok($pop->poll_query_until('postgres', $covered), 'the new seals are timestamped');
my $requests = slurp("$dir/real/tsa.count") - $requests0;
my $seals = $pop->safe_psql('postgres', 'SELECT max(id) FROM interop.log_seal') - $seals0;
cmp_ok($requests, '<=', $seals, "$requests requests to the TSA for the $seals seals of 30 exchanges");

# An exported token verifies with openssl alone: over the seal's JWS, from
# a TSA certified by the federation's root.
my ($seal_id, $token, $jws) = split /\|/, $pop->safe_psql('postgres', q{
	SELECT t.seal_id, encode(t.token, 'base64'), s.jws FROM interop.seal_timestamp t
	JOIN interop.log_seal s ON s.id = t.seal_id ORDER BY t.seal_id DESC LIMIT 1});
spew("$dir/token.der", decode_base64($token));
spew("$dir/seal.jws", $jws);
like(`openssl ts -verify -token_in -in $dir/token.der -data $dir/seal.jws -CAfile $ca/fedroot/ca.crt 2>&1`,
	qr/Verification: OK/, 'openssl ts -verify verifies an exported token against the seal and the root');
spew("$dir/other.jws", $jws . 'x');
unlike(`openssl ts -verify -token_in -in $dir/token.der -data $dir/other.jws -CAfile $ca/fedroot/ca.crt 2>&1`,
	qr/Verification: OK/, 'and not against other content');

# The evidence of one exchange, verified by node's crypto and jose and by
# openssl alone: both signatures and their chains, the answer bound to the
# request, the record's bytes, the Merkle path to the signed root, the
# chain of seals to the timestamped one, and its token.
my $message = $pop->safe_psql('postgres', q{
	SELECT max(id) FROM interop.message_log WHERE direction = 'in' AND status = 200});
$pop->poll_query_until('postgres', qq{
	SELECT EXISTS (SELECT 1 FROM interop.log_seal WHERE log = 'message_log' AND upto_id >= $message)
	AND ($covered)}) or die 'the exchange was not sealed and timestamped';
spew("$dir/evidence.json", $pop->safe_psql('postgres', "SELECT interop.evidence($message)"));
mkdir "$dir/ev";
my $verifier = "NODE_PATH=/usr/share/nodejs node $TOP/test/evidence/verify-evidence.cjs";
my $checked = `$verifier $dir/evidence.json $dir/ev 2>&1`;
is($?, 0, 'node and jose verify the evidence document of an exchange') or diag($checked);
diag($checked);
like($checked, qr/the Merkle path \(\d+ steps\) leads to the root signed by seal \d+/, 'up to the sealed root');
# every exchange of the thirty, wherever its leaf sits in its seal's tree
my ($all_ok, $deepest) = (1, 0);
for my $id (split /\n/, $pop->safe_psql('postgres', qq{
	SELECT id FROM interop.message_log WHERE direction = 'in' AND status = 200 AND id < $message ORDER BY id}))
{
	spew("$dir/ev.json", $pop->safe_psql('postgres', "SELECT interop.evidence($id)"));
	my $r = `$verifier $dir/ev.json $dir/ev 2>&1`;
	$all_ok = 0, diag("record $id: $r") if $?;
	$deepest = $1 if $r =~ /Merkle path \((\d+) steps\)/ && $1 > $deepest;
}
ok($all_ok, "so does the evidence of every other exchange (Merkle paths of up to $deepest steps)");
spew("$dir/evidence.json", $pop->safe_psql('postgres', "SELECT interop.evidence($message)"));
for my $m ('request', 'response')
{
	like(`openssl verify -CAfile $ca/fedroot/ca.crt -untrusted $dir/ev/$m.chain.pem $dir/ev/$m.leaf.pem 2>&1`,
		qr/: OK$/m, "openssl verify: the $m signer's certificate chains to the federation's root");
}
like(`openssl ts -verify -token_in -in $dir/ev/token.der -data $dir/ev/timestamped.jws -CAfile $ca/fedroot/ca.crt 2>&1`,
	qr/Verification: OK/, 'openssl ts -verify: the chain ends at a timestamped seal');
# one byte of the answer changed in the document: refused
my $doc = slurp("$dir/evidence.json");
$doc =~ s/("response": "[^.]+\.)(.)/$1 . ($2 eq 'A' ? 'B' : 'A')/e;
spew("$dir/forged.json", $doc);
like(`$verifier $dir/forged.json $dir/ev 2>&1`, qr/evidence refused: /, 'a changed document is refused');
($ok, $out, $err) = $pop->psql('postgres', 'SELECT interop.evidence(0)');
like($err, qr/there is no record 0 in interop.message_log/, 'evidence() of no record: a clear error');

my ($code, $metrics) = curl_gateway($pop, '/metrics', as => $tax);
like($metrics, qr/^interop_timestamp_failures_total 0$/m, 'metrics: no failure');
like($metrics, qr/^interop_timestamp_last_token_timestamp_seconds [1-9]/m, 'metrics: the time of the last token');

# The TSA goes down.
stop_child($tsa);
set_setting($pop, 'interop.max_timestamp_gap', '6s');
$tax->safe_psql('postgres', $query);
ok($pop->poll_query_until('postgres', q{
	SELECT failures >= 2 AND last_error LIKE 'could not reach the TSA%'
	AND next_attempt - last_failure_at >= interval '10 s' FROM interop.tsa_status}),
	'failed requests are recorded and backed off');
($ok, $out, $err) = (0, '', '');
for (1 .. 200)
{
	($ok, $out, $err) = $tax->psql('postgres', $query);
	last if $ok != 0;
	usleep(100_000);
}
isnt($ok, 0, 'past interop.max_timestamp_gap the provider refuses the exchange');
like($err, qr/no timestamp for \d+ s: .*interop.max_timestamp_gap is 6 s; the last request to the TSA failed: could not reach the TSA/,
	'and says why');
($code, my $health) = curl_gateway($pop, '/v1/health', as => $tax);
is($code, '503', '/v1/health: not ready');
like($health, qr/no timestamp for/, '/v1/health names the gap');
($code, $metrics) = curl_gateway($pop, '/metrics', as => $tax);
like($metrics, qr/^interop_timestamp_failures_total [1-9]/m, 'metrics: the failures');
my ($gap) = $metrics =~ /^interop_timestamp_gap_seconds ([\d.]+)$/m;
cmp_ok($gap // 0, '>=', 6, 'metrics: the gap');
like($pop->safe_psql('postgres', 'SELECT problem FROM interop.verify_log()'),
	qr/seals \d+ to \d+ have had no timestamp for \d+ s, longer than interop.max_timestamp_gap \(6 s\)/,
	'verify_log() names the seals without a timestamp');

# A TSA that the federation does not trust answers: refused, nothing stored.
my $tokens = $pop->safe_psql('postgres', 'SELECT count(*) FROM interop.seal_timestamp');
$tsa = serve_tsa($port, "$dir/fake", "$dir/impostor", "$ca/otherroot/ca.crt");
$pop->safe_psql('postgres', 'UPDATE interop.tsa_status SET next_attempt = now()');
ok($pop->poll_query_until('postgres', q{
	SELECT last_error LIKE '%the answer of the TSA % was refused: %' FROM interop.tsa_status}),
	'a token from an untrusted TSA is refused')
  or diag($pop->safe_psql('postgres', 'SELECT last_error FROM interop.tsa_status'));
is($pop->safe_psql('postgres', 'SELECT count(*) FROM interop.seal_timestamp'), $tokens, 'and not stored');
($ok) = $tax->psql('postgres', $query);
isnt($ok, 0, 'the exchanges stay refused');
stop_child($tsa);

# The real TSA is back: the newest seal is timestamped, exchanges resume.
$tsa = serve_tsa($port, "$dir/real", "$dir/tsa", "$ca/issuing/ca.crt");
$pop->safe_psql('postgres', 'UPDATE interop.tsa_status SET next_attempt = now()');
ok($pop->poll_query_until('postgres', $covered), 'the TSA back, the seals are timestamped');
for (1 .. 100)
{
	($ok, $out, $err) = $tax->psql('postgres', $query);
	last if $ok == 0;
	usleep(100_000);
}
is($out, 'Person 1', 'and the exchanges resume') or diag($err);
like($pop->safe_psql('postgres', 'SELECT problem FROM interop.verify_log()'),
	qr/seals \d+ to \d+ were first timestamped at .*, \d+ s after seal \d+ was made, longer than interop.max_timestamp_gap \(6 s\): they could have been rewritten in between/,
	'verify_log() names the seals timestamped later than the gap');
set_setting($pop, 'interop.max_timestamp_gap', '4h');
is($pop->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0',
	'within the default gap of 4 hours, all verifies');

# prune_log() keeps the evidence of what it removes, in interop.log_archive.
$pop->safe_psql('postgres', 'SET interop.min_log_retention = 0; SELECT interop.prune_log(now())');
is($pop->safe_psql('postgres', "SELECT count(*) FROM interop.message_log WHERE id = $message"), '0',
	'prune_log() removed the exchange from the log');
is($pop->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0', 'the pruned log verifies');
spew("$dir/archived.json", $pop->safe_psql('postgres', "SELECT interop.evidence($message)"));
$checked = `$verifier $dir/archived.json $dir/ev 2>&1`;
is($?, 0, 'its evidence, from interop.log_archive, still verifies with node and jose') or diag($checked);
is(slurp("$dir/archived.json"), slurp("$dir/evidence.json"), 'and is the same document as before the prune');

# Forged tokens, put in by a superuser: the newest token copied onto a seal
# it is not over, and a token of the untrusted TSA over a seal's very JWS.
# (Two seals without a token of their own: made with timestamping off.)
set_setting($pop, 'interop.tsa_url', '');
my @bare;
for (1 .. 2)
{
	$tax->safe_psql('postgres', $query);
	$pop->poll_query_until('postgres', q{SELECT count(*) = 0 FROM interop.message_log m
		WHERE m.id > (SELECT max(upto_id) FROM interop.log_seal WHERE log = 'message_log')});
	push @bare, $pop->safe_psql('postgres', 'SELECT max(id) FROM interop.log_seal');
}
my ($bare, $bare2) = @bare;
my $bare2_jws = $pop->safe_psql('postgres', "SELECT jws FROM interop.log_seal WHERE id = $bare2");
$pop->safe_psql('postgres', qq{
	INSERT INTO interop.seal_timestamp (seal_id, token, gen_time, tsa, tsa_url)
	SELECT $bare, token, gen_time, tsa, tsa_url FROM interop.seal_timestamp ORDER BY seal_id DESC LIMIT 1});
spew("$dir/bare.jws", $bare2_jws);
sh("openssl ts -query -data $dir/bare.jws -sha256 -cert -out $dir/fake/q.der 2>/dev/null");
sh("openssl ts -reply -config $dir/fake/tsa.cnf -queryfile $dir/fake/q.der -token_out -out $dir/fake/t.der 2>/dev/null");
my $fake = unpack('H*', slurp("$dir/fake/t.der"));
$pop->safe_psql('postgres', qq{
	INSERT INTO interop.seal_timestamp (seal_id, token, gen_time, tsa, tsa_url)
	VALUES ($bare2, '\\x$fake', now(), 'impostor tsa', 'http://elsewhere')});
my $problems = $pop->safe_psql('postgres', 'SELECT problem FROM interop.verify_log()');
like($problems, qr/the timestamp of seal $bare is over other content: the seal was changed after it was timestamped/,
	'verify_log() names a token copied onto another seal');
like($problems, qr/the timestamp of seal $bare2 does not verify: its signature or certificate does not verify/,
	'and a token of a TSA that does not chain to an anchor');
($ok, $out, $err) = $pop->psql('postgres', "DELETE FROM interop.seal_timestamp WHERE seal_id = $bare");
like($err, qr/interop.seal_timestamp is append-only/, 'the tokens are append-only');

done_testing();
