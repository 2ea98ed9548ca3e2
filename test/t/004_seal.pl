# 004_seal.pl: sealed, append-only logs.  A registry serves an agency; both
# log every exchange, and the registry records consents.  Proves:
#  - the sync worker seals both logs every interop.seal_interval, and
#    interop.seal_log() seals on demand; verify_log() finds nothing on an
#    untouched log;
#  - nobody, a superuser included, can UPDATE, DELETE or TRUNCATE a log
#    while its triggers are on;
#  - tampering by a superuser with triggers off is detected and named: an
#    edited field, a deleted record, a record inserted into a sealed range,
#    an edited seal, its leaves, a deleted seal, an edited consent event;
#  - after a key change, old seals still verify (interop.node_key);
#  - prune_log() removes whole sealed batches only, records a signed prune
#    entry, and verification stays clean;
#  - the sync worker follows a reload of seal_interval and comes back after
#    kill -9.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use InteropTest;

my $ca = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $REG = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $reg = new_node('registry', $REG, $ca, 'interop.seal_interval' => "'500ms'");
my $tax = new_node('tax', $TAX, $ca, 'interop.gateway_workers' => 0, 'interop.seal_interval' => 0);

$reg->safe_psql('postgres', qq{
	CREATE TABLE person (id text PRIMARY KEY, name text);
	INSERT INTO person SELECT 'P' || i, 'Person ' || i FROM generate_series(1, 50) i;
	SELECT interop.publish('person', 'person', filter_columns => '{id}', subject_column => 'id');
	SELECT interop.grant_access('person', '$TAX', legal_basis => 'Tax Act §12');
	SELECT interop.grant_consent('P1', '$TAX', 'person', 'tax assessment');
	SELECT interop.grant_consent('P2', '$TAX', 'person', 'tax assessment');
});
$tax->safe_psql('postgres', "SELECT interop.add_peer('$REG', '@{[gateway_url($reg)]}')");
ok(wait_for_gateway($reg, "$ca/fedroot/ca.crt", $tax), 'the registry gateway is up');

# ask(N): N calls from the tax office
sub ask
{
	my $n = shift;
	$tax->safe_psql('postgres', qq{
		SELECT count(*) FROM generate_series(1, $n) i,
			LATERAL interop.query('$REG', 'person', jsonb_build_object('id', 'P' || i)) q});
}
ask(20);

# problems(NODE): what verify_log() finds, one line per problem
sub problems
{
	my $node = shift;
	return $node->safe_psql('postgres',
		q{SELECT log || ' ' || coalesce(record_id::text, '-') || ': ' || problem FROM interop.verify_log()});
}

# ---- sealing ----

is($reg->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'interop sync'"),
	'1', 'the sync worker runs, visible in pg_stat_activity as "interop sync"');
ok($reg->poll_query_until('postgres', q{
	SELECT coalesce(max(upto_id), 0) >= (SELECT max(id) FROM interop.message_log)
	FROM interop.log_seal WHERE log = 'message_log'}),
	'the sync worker seals the message log within seal_interval');
ok($reg->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM interop.log_seal WHERE log = 'consent_log' AND record_count = 2}),
	'and the consent log');
is($tax->safe_psql('postgres', 'SELECT interop.seal_log()'), '20', 'seal_log() seals the 20 new records now');
is($tax->safe_psql('postgres', 'SELECT interop.seal_log()'), '0', 'and nothing twice');
is(problems($reg), '', 'verify_log() finds nothing on the provider');
is(problems($tax), '', 'nor on the consumer');
is($tax->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE prev IS NULL) = 1 AND bool_and(jws LIKE 'ey%')
	FROM interop.log_seal}), 't', 'each seal is a JWS chained to the one before');
my $payload = $tax->safe_psql('postgres', q{
	SELECT interop.jws_payload(jws::interop.jws) FROM interop.log_seal ORDER BY id LIMIT 1});
like($payload, qr/"typ": "interop-seal".*"count": 20/s, 'its payload names the log, the range, the count and the root');

ask(5);
my $t = $tax->safe_psql('postgres', q{
	BEGIN;
	SELECT interop.seal_log();
	SELECT count(*) FROM interop.log_seal;
	ROLLBACK;});
like($t, qr/^5\n/, 'a seal made in a transaction that rolls back leaves nothing');
is($tax->safe_psql('postgres', q{SELECT interop.seal_log()}), '5', 'the next seal takes those records');
my ($ret, $out, $err) = $tax->psql('postgres',
	'BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT interop.seal_log(); COMMIT;');
like($err, qr/must run in a READ COMMITTED transaction/, 'seal_log() refuses a transaction snapshot');

# ---- append-only ----

for my $stmt ('UPDATE interop.message_log SET purpose = NULL',
	'DELETE FROM interop.message_log WHERE id = 1',
	'TRUNCATE interop.message_log',
	'DELETE FROM interop.log_seal',
	'UPDATE interop.consent_log SET subject = NULL')
{
	($ret, $out, $err) = $reg->psql('postgres', $stmt);
	like($err, qr/is append-only/, "a superuser is refused: $stmt");
}
$reg->safe_psql('postgres', q{CREATE ROLE audit LOGIN IN ROLE interop_auditor});
($ret, $out, $err) = $reg->psql('postgres', 'SELECT count(*) FROM interop.message_log; DELETE FROM interop.message_log',
	extra_params => [ '-U', 'audit' ]);
like($err, qr/permission denied/, 'the auditor reads the log but cannot delete');
is($reg->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()', extra_params => [ '-U', 'audit' ]),
	'0', 'the auditor can run verify_log()');

# ---- tampering by a superuser with triggers off ----

# tamper(NODE, SQL): run SQL with triggers off, as a superuser can
sub tamper
{
	my ($node, $sql) = @_;
	$node->safe_psql('postgres', "SET session_replication_role = replica; $sql");
}

tamper($tax, q{UPDATE interop.message_log SET purpose = 'marketing' WHERE id = 3});
is(problems($tax), 'message_log 3: record 3 was changed after seal 1', 'an edited field is named');

tamper($tax, q{DELETE FROM interop.message_log WHERE id = 7});
like(problems($tax), qr/^message_log 7: record 7 was deleted after seal 1$/m, 'a deleted record is named');

# an id that no committed record has: taken by a rolled-back insert, then sealed over
$tax->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO interop.message_log (direction, status, duration_ms) VALUES ('out', 0, 0);
	ROLLBACK;});
ask(1);
$tax->safe_psql('postgres', 'SELECT interop.seal_log()');
my $gap = $tax->safe_psql('postgres', q{
	SELECT max(id) - 1 FROM interop.message_log});
is($tax->safe_psql('postgres', "SELECT count(*) FROM interop.message_log WHERE id = $gap"), '0',
	"id $gap is a gap inside the last seal");
tamper($tax, qq{INSERT INTO interop.message_log (id, direction, status, duration_ms, peer, service)
	OVERRIDING SYSTEM VALUE VALUES ($gap, 'out', 200, 1, '$REG', 'person')});
like(problems($tax), qr/^message_log $gap: record $gap was inserted into the range of seal \d+$/m,
	'a record inserted into a sealed range is named');

my $seal = $tax->safe_psql('postgres', q{SELECT max(id) FROM interop.log_seal});
tamper($tax, qq{UPDATE interop.log_seal SET record_count = record_count + 1 WHERE id = $seal});
like(problems($tax), qr/^log_seal $seal: seal $seal was changed: its row differs from its signed content$/m,
	'an edited seal is named');
tamper($tax, qq{UPDATE interop.log_seal SET record_count = record_count - 1 WHERE id = $seal});

tamper($tax, q{UPDATE interop.log_seal SET leaves = set_byte(leaves, 20, get_byte(leaves, 20) # 1) WHERE id = 1});
like(problems($tax), qr/^log_seal 1: the record hashes of seal 1 do not match its signed root$/m,
	'edited record hashes in a seal are caught by its root');
tamper($tax, q{UPDATE interop.log_seal SET leaves = set_byte(leaves, 20, get_byte(leaves, 20) # 1) WHERE id = 1});

my ($s2, $s3) = split /\n/, $tax->safe_psql('postgres', q{SELECT id FROM interop.log_seal ORDER BY id OFFSET 1 LIMIT 2});
tamper($tax, qq{UPDATE interop.log_seal SET jws = overlay(jws PLACING
	CASE WHEN substr(jws, length(jws) - 10, 1) = 'A' THEN 'B' ELSE 'A' END FROM length(jws) - 10 FOR 1) WHERE id = $s2});
like(problems($tax), qr/^log_seal $s2: the signature of seal $s2 does not verify$/m, 'a forged signature is named');
like(problems($tax), qr/^log_seal $s3: the chain is broken before seal $s3/m, 'and the next seal shows the chain broken');

# a seal with a successor: the newest seal has none, and the sealer would
# simply seal its range again (docs/security.md: anchor the chain's head)
$reg->safe_psql('postgres', qq{SELECT interop.grant_consent('P3', '$TAX', 'person', 'tax assessment')});
ok($reg->poll_query_until('postgres', q{
	SELECT max(upto_id) = (SELECT max(id) FROM interop.consent_log) FROM interop.log_seal WHERE log = 'consent_log'}),
	'the sync worker seals a new consent');
tamper($reg, q{DELETE FROM interop.log_seal WHERE id = (SELECT min(id) FROM interop.log_seal WHERE log = 'message_log')});
like(problems($reg), qr/the chain is broken before seal \d+/, 'a deleted seal breaks the chain');
like(problems($reg), qr/a seal is missing/, 'and is reported missing');

tamper($reg, q{UPDATE interop.consent_log SET purpose = 'marketing' WHERE id = 1});
like(problems($reg), qr/^consent_log 1: record 1 was changed after seal \d+$/m, 'an edited consent event is named');

# a protected header, kept once in message_header and referred to by digest
my ($hid, $header) = split /\|/, $tax->safe_psql('postgres', q{SELECT id, header FROM interop.message_header ORDER BY id LIMIT 1});
my $rec = $tax->safe_psql('postgres', qq{
	SELECT min(m.id) FROM interop.message_log m, interop.message_header h
	WHERE h.id = $hid AND (m.request LIKE '~' || h.digest || '%' OR m.response LIKE '~' || h.digest || '%')
	AND m.id <= (SELECT max(upto_id) FROM interop.log_seal WHERE log = 'message_log' AND kind = 'seal')});
ok($rec ne '', 'a sealed record refers to the first header');
tamper($tax, qq{UPDATE interop.message_header SET header = header || 'A' WHERE id = $hid});
like(problems($tax), qr/^message_header $hid: protected header $hid was changed: it does not hash to its digest/m,
	'an edited header is named');
like(problems($tax), qr/^message_log $rec: record $rec refers to a protected header that interop.message_header no longer holds intact$/m,
	'and so is a record that refers to it');
($ret, $out, $err) = $tax->psql('postgres', "SELECT interop.evidence($rec)");
like($err, qr/ERROR:  the protected header \S+ of a logged message is missing or changed/, 'evidence() refuses to give it back');
tamper($tax, qq{DELETE FROM interop.message_header WHERE id = $hid});
($ret, $out, $err) = $tax->psql('postgres', "SELECT interop.message_jws(request) FROM interop.message_log WHERE id = $rec");
like($err, qr/ERROR:  the protected header \S+ of a logged message is missing or changed/, 'nor message_jws() a removed one');
tamper($tax, qq{INSERT INTO interop.message_header (id, digest, header) OVERRIDING SYSTEM VALUE
	VALUES ($hid, translate(rtrim(encode(sha256('$header'), 'base64'), '='), '+/', '-_'), '$header')});
unlike(problems($tax), qr/message_header|protected header/, 'the header put back, the records verify again');

# ---- key change ----

my $fresh = new_node('fresh', 'MN/GOV/3000003/archive', $ca, 'interop.gateway_workers' => 0, 'interop.seal_interval' => 0,
	'interop.min_log_retention' => 0);
$fresh->safe_psql('postgres', q{CREATE TABLE t (a text PRIMARY KEY);
	SELECT interop.publish('s', 't', filter_columns => '{a}', subject_column => 'a')});
$fresh->safe_psql('postgres', q{SELECT interop.grant_consent('A1', 'MN/GOV/2000002/tax', 's', 'p')});
$fresh->safe_psql('postgres', 'SELECT interop.seal_log()');
$fresh->safe_psql('postgres', q{SELECT interop.init_node('MN/GOV/3000003/archive', 'EdDSA', overwrite => true)});
$fresh->safe_psql('postgres', q{SELECT interop.grant_consent('A2', 'MN/GOV/2000002/tax', 's', 'p')});
$fresh->safe_psql('postgres', 'SELECT interop.seal_log()');
is($fresh->safe_psql('postgres', 'SELECT count(*) FROM interop.node_key'), '2', 'node_key keeps both keys');
is(problems($fresh), '', 'seals made before and after a key change verify');

# ---- pruning ----

$fresh->safe_psql('postgres', q{SELECT pg_sleep(0.1)});
my $cut = $fresh->safe_psql('postgres', q{SELECT now()});
$fresh->safe_psql('postgres', q{SELECT interop.grant_consent('A3', 'MN/GOV/2000002/tax', 's', 'p')});
is($fresh->safe_psql('postgres', "SELECT interop.prune_log('$cut')"), '2',
	'prune_log removes the records of whole seals older than the cut (2 consent events)');
is($fresh->safe_psql('postgres', 'SELECT string_agg(subject, \',\') FROM interop.consent_log'), 'A3',
	'the newer record stays (sealed by prune_log first)');
is($fresh->safe_psql('postgres', q{SELECT kind, record_count FROM interop.log_seal ORDER BY id DESC LIMIT 1}),
	'prune|2', 'a signed prune entry records the removal');
is(problems($fresh), '', 'the pruned log still verifies');
is($fresh->safe_psql('postgres', "SELECT interop.prune_log('$cut')"), '0', 'pruning again removes nothing');
tamper($fresh, q{DELETE FROM interop.consent_log});
like(problems($fresh), qr/^consent_log \d+: record \d+ was deleted after seal \d+$/m,
	'a deletion outside prune_log is still named');

# ---- the sync worker: reload and crash ----

# consents_sealed(NODE): whether every consent event is sealed
sub consents_sealed
{
	return $_[0]->safe_psql('postgres', q{
		SELECT coalesce(max(upto_id), 0) >= (SELECT max(id) FROM interop.consent_log)
		FROM interop.log_seal WHERE log = 'consent_log' AND kind = 'seal'});
}
$reg->safe_psql('postgres', 'ALTER SYSTEM SET interop.seal_interval = 0');
$reg->reload;
sleep(1);
$reg->safe_psql('postgres', qq{SELECT interop.grant_consent('P4', '$TAX', 'person', 'tax assessment')});
sleep(2);
is(consents_sealed($reg), 'f', 'after a reload with seal_interval = 0 the sync worker stops sealing');
$reg->safe_psql('postgres', 'ALTER SYSTEM RESET interop.seal_interval');
$reg->safe_psql('postgres', q{ALTER SYSTEM SET interop.seal_interval = '200ms'});
$reg->reload;
ok($reg->poll_query_until('postgres', q{
	SELECT coalesce(max(upto_id), 0) >= (SELECT max(id) FROM interop.consent_log)
	FROM interop.log_seal WHERE log = 'consent_log' AND kind = 'seal'}),
	'and seals again after the next reload');
$reg->append_conf('postgresql.conf', 'restart_after_crash = on');
$reg->reload;
my $sync_pid = $reg->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'interop sync'});
kill 'KILL', $sync_pid;
ok($reg->poll_query_until('postgres', qq{
	SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'interop sync' AND pid <> $sync_pid}),
	'after kill -9 of the sync worker the cluster restarts it');
$reg->safe_psql('postgres', qq{SELECT interop.grant_consent('P5', '$TAX', 'person', 'tax assessment')});
ok($reg->poll_query_until('postgres', q{
	SELECT coalesce(max(upto_id), 0) >= (SELECT max(id) FROM interop.consent_log)
	FROM interop.log_seal WHERE log = 'consent_log' AND kind = 'seal'}),
	'and it seals again');

done_testing();
