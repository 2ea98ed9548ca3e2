# 007_subscribe.pl: subscriptions (POST /v1/changes, interop.subscribe).
# Proves, comparing the consumer's table with the provider's row by row:
#  - the initial copy, in pages, then incremental upserts and deletes;
#  - updates and deletes of the same key, and a primary key update, within
#    one batch;
#  - a provider restart in the middle of a copy;
#  - kill -9 of the consumer's sync worker in the middle of a copy and of
#    a stream of changes;
#  - a pruned change log: the consumer is told 410 and copies again;
#  - a subscription to a service the consumer may not read, or that does
#    not track changes: no rows, the refusal in stat_subscription;
#  - TRUNCATE of a tracked table is refused; unpublishing removes the
#    capture triggers.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use MIME::Base64 ();
use InteropTest;

my $ca = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $pop = new_node('population', $POP, $ca, 'interop.seal_interval' => 0);
my $tax = new_node('tax', $TAX, $ca, 'interop.gateway_workers' => 0, 'restart_after_crash' => 'on',
	'interop.seal_interval' => 0);

# a table whose rows are compared: every column, in key order
sub digest
{
	my ($node, $table) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t.id)), '') FROM $table t");
}

# until the consumer's table equals the provider's (and the subscription is in sync)
sub converges
{
	my ($source, $target) = @_;
	my $deadline = time() + 90;
	my ($want, $got) = ('', '');
	while (time() < $deadline)
	{
		$want = digest($pop, $source);
		$got = digest($tax, $target);
		return 1 if $want eq $got && $tax->safe_psql('postgres', qq{
			SELECT phase = 'sync' AND last_error IS NULL FROM interop.subscription WHERE target = '$target'::regclass}) eq 't';
		usleep(200_000);
	}
	diag("provider $want, consumer $got");
	return 0;
}

$pop->safe_psql('postgres', qq{
	CREATE TABLE register (id int PRIMARY KEY, name text NOT NULL, born date, tags text[], extra jsonb);
	INSERT INTO register SELECT i, 'Person ' || i, date '1950-01-01' + i, ARRAY['t' || (i % 7)],
	                            jsonb_build_object('n', i, 's', 'x"y')
	FROM generate_series(1, 1000) i;
	SELECT interop.publish('register', 'register', max_rows => 100, track_changes => true);
	SELECT interop.grant_access('register', '$TAX', purposes => '{statistics}');
	CREATE TABLE big (id int PRIMARY KEY, v text);
	INSERT INTO big SELECT i, md5(i::text) FROM generate_series(1, 30000) i;
	SELECT interop.publish('big', 'big', max_rows => 200, track_changes => true);
	SELECT interop.grant_access('big', '$TAX');
	CREATE TABLE secret (id int PRIMARY KEY, v text);
	INSERT INTO secret VALUES (1, 'classified');
	SELECT interop.publish('secret', 'secret', track_changes => true);
	SELECT interop.publish('lookup', 'register', filter_columns => '{id}');
	SELECT interop.grant_access('lookup', '$TAX');
});
$tax->safe_psql('postgres', qq{
	SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}');
	CREATE TABLE register_copy (id int PRIMARY KEY, name text NOT NULL, born date, tags text[], extra jsonb);
	CREATE TABLE big_copy (id int PRIMARY KEY, v text);
	CREATE TABLE secret_copy (id int PRIMARY KEY, v text);
	CREATE TABLE lookup_copy (id int PRIMARY KEY, name text NOT NULL, born date, tags text[], extra jsonb);
});
ok(wait_for_gateway($pop, "$ca/fedroot/ca.crt", $tax), 'the provider gateway is up');

# ---- the initial copy ----

$tax->safe_psql('postgres', qq{
	INSERT INTO register_copy VALUES (5000, 'stale row, not at the provider', NULL, NULL, NULL);
	SELECT interop.subscribe('$POP', 'register', 'register_copy', 'statistics', every => '200 ms')});
ok(converges('register', 'register_copy'), 'the initial copy makes the table equal to the provider\'s');
is($tax->safe_psql('postgres', q{
	SELECT rows_copied, batches >= 10, copy_finished_at IS NOT NULL, lag < interval '30 s'
	FROM interop.stat_subscription WHERE service = 'register'}), '1000|t|t|t',
	'1000 rows copied in pages of at most 100 (max_rows), then in sync');
is($tax->safe_psql('postgres', q{
	SELECT count(*) > 0, bool_and(status = 200) FROM interop.message_log WHERE direction = 'out' AND service = 'register'}),
	't|t', 'every pull is logged by the consumer');
is($pop->safe_psql('postgres', q{
	SELECT count(*) > 0, bool_and(status = 200) FROM interop.message_log WHERE direction = 'in' AND service = 'register'}),
	't|t', 'and by the provider');

# ---- a composite key and many types, paged ----

$pop->safe_psql('postgres', q{
	CREATE TABLE kinds (region text, at timestamptz, n numeric, f float8, b bytea, j json, arr int[], ok boolean,
	                    note varchar(20), PRIMARY KEY (region, at));
	INSERT INTO kinds
	SELECT (ARRAY['north', 'south, "east"', 'we''st', E'tab\there', 'ünï'])[1 + i % 5],
	       timestamptz '2026-01-01 00:00:00.123456+00' + i * interval '1 min 0.000001 s',
	       12345678901234567890.123456789 * i,
	       (ARRAY[1e-300, 'NaN', 'Infinity', '-Infinity', -0.5])[1 + i % 5]::float8,
	       decode(lpad(to_hex(i), 4, '0') || '00ff', 'hex'),
	       json_build_object('i', i, 'a', ARRAY[1, 2]),
	       ARRAY[i, NULL, -i], i % 3 = 0, CASE WHEN i % 4 > 0 THEN 'note ' || i END
	FROM generate_series(1, 250) i;
	SELECT interop.publish('kinds', 'kinds', max_rows => 40, track_changes => true);
});
$pop->safe_psql('postgres', qq{SELECT interop.grant_access('kinds', '$TAX')});
$tax->safe_psql('postgres', qq{
	CREATE TABLE kinds_copy (region text, at timestamptz, n numeric, f float8, b bytea, j json, arr int[], ok boolean,
	                         note varchar(20), PRIMARY KEY (region, at));
	SELECT interop.subscribe('$POP', 'kinds', 'kinds_copy', every => '200 ms')});
# json values travel inside the signed JSON batch, so they arrive as their jsonb form (docs: operations.md)
my $kinds = q{SELECT count(*) || ':' || md5(string_agg((region, at, n, f, b, j::jsonb, arr, ok, note)::text, '|'
	ORDER BY region, at)) FROM %s t};
my $kinds_want = $pop->safe_psql('postgres', sprintf($kinds, 'kinds'));
ok($tax->poll_query_until('postgres', sprintf($kinds, 'kinds_copy'), $kinds_want),
	'a table with a two-column key (text, timestamptz) and numeric, float (NaN, infinities), bytea, json, array, boolean and varchar columns is copied exactly (json as jsonb), in pages of 40');
$tax->safe_psql('postgres', qq{SELECT interop.unsubscribe('$POP', 'kinds')});

# ---- changes ----

$pop->safe_psql('postgres', q{
	UPDATE register SET name = name || ' (moved)' WHERE id % 10 = 0;
	DELETE FROM register WHERE id BETWEEN 500 AND 520;
	INSERT INTO register SELECT i, 'New ' || i FROM generate_series(1001, 1100) i;
});
ok(converges('register', 'register_copy'), 'updates, deletes and inserts reach the consumer');

# in one batch: the same key updated then deleted, inserted then deleted,
# deleted then inserted again, and a primary key changed
$tax->safe_psql('postgres', q{UPDATE interop.subscription SET next_pull = now() + interval '1 hour'});
$pop->safe_psql('postgres', q{
	UPDATE register SET name = 'first' WHERE id = 1;
	UPDATE register SET name = 'second' WHERE id = 1;
	DELETE FROM register WHERE id = 1;
	INSERT INTO register VALUES (2000, 'short-lived');
	DELETE FROM register WHERE id = 2000;
	DELETE FROM register WHERE id = 2;
	INSERT INTO register VALUES (2, 'back again');
	UPDATE register SET id = 3003 WHERE id = 3;
	BEGIN;
	UPDATE register SET name = 'in a transaction' WHERE id = 4;
	DELETE FROM register WHERE id = 4;
	COMMIT;
});
my $batches = $tax->safe_psql('postgres', q{SELECT batches FROM interop.subscription WHERE service = 'register'});
$tax->safe_psql('postgres', q{UPDATE interop.subscription SET next_pull = now(); SELECT interop.wake_sync_worker()});
ok(converges('register', 'register_copy'), 'updates and deletes of the same key within one batch end as at the provider');
is($tax->safe_psql('postgres', qq{SELECT batches - $batches FROM interop.subscription WHERE service = 'register'}), '1',
	'in one batch');
is($tax->safe_psql('postgres', q{SELECT count(*) FROM register_copy WHERE id IN (1, 3, 4, 2000)}), '0',
	'deleted keys, and the old primary key, are gone');
is($tax->safe_psql('postgres', q{SELECT name FROM register_copy WHERE id IN (2, 3003) ORDER BY id}), "back again\nPerson 3",
	'a re-inserted key and a changed primary key are there');

# ---- refusals ----

$tax->safe_psql('postgres', qq{
	SELECT interop.subscribe('$POP', 'secret', 'secret_copy', every => '200 ms');
	SELECT interop.subscribe('$POP', 'lookup', 'lookup_copy', every => '200 ms')});
ok($tax->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM interop.stat_subscription WHERE service IN ('secret', 'lookup') AND failures >= 2}),
	'subscriptions the provider refuses are retried with a backoff');
like($tax->safe_psql('postgres', q{SELECT last_error FROM interop.stat_subscription WHERE service = 'secret'}),
	qr/access_denied: MN\/GOV\/2000002\/tax has no access to service "secret"/,
	'a service the consumer may not read: access_denied in last_error');
like($tax->safe_psql('postgres', q{SELECT last_error FROM interop.stat_subscription WHERE service = 'lookup'}),
	qr/service "lookup" does not track changes/, 'a service that does not track changes: said so');
is($tax->safe_psql('postgres', q{SELECT (SELECT count(*) FROM secret_copy) + (SELECT count(*) FROM lookup_copy)}), '0',
	'and nothing is written');
is($pop->safe_psql('postgres', q{
	SELECT string_agg(DISTINCT status || ' ' || error_code, ', ') FROM interop.message_log
	WHERE direction = 'in' AND service IN ('secret', 'lookup')}), '403 access_denied, 404 unknown_service',
	'the provider logs the refusals');
$tax->safe_psql('postgres', qq{SELECT interop.unsubscribe('$POP', 'secret'), interop.unsubscribe('$POP', 'lookup')});

# a target whose primary key is not the provider's: the batch is not applied
$tax->safe_psql('postgres', qq{
	CREATE TABLE big_wrong (v text PRIMARY KEY, id int);
	SELECT interop.subscribe('$POP', 'big', 'big_wrong', every => '200 ms')});
ok($tax->poll_query_until('postgres', q{
	SELECT last_error LIKE 'the primary key of "public.big_wrong" is not the provider''s: The provider''s key is (id); the target''s is (v).' FROM interop.stat_subscription WHERE service = 'big'}),
	'a target with another primary key: the error names both keys');
is($tax->safe_psql('postgres', q{SELECT count(*) FROM big_wrong}), '0', 'and no row is applied');
ok($tax->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM interop.message_log WHERE direction = 'out' AND service = 'big'
	AND status = 200 AND error_message = 'not applied: the batch before it was not applied'}),
	'the page fetched ahead of the failed batch is logged, and not applied either');
$tax->safe_psql('postgres', qq{SELECT interop.unsubscribe('$POP', 'big')});

# ---- a provider restart in the middle of a copy ----

$tax->safe_psql('postgres', qq{SELECT interop.subscribe('$POP', 'big', 'big_copy', every => '200 ms')});
ok($tax->poll_query_until('postgres', q{
	SELECT rows_copied >= 2000 AND phase = 'copy' FROM interop.subscription WHERE service = 'big'}),
	'the copy of 30 000 rows is under way');
$pop->stop('immediate');
my ($copied, $copy_started) = split /\|/,
	$tax->safe_psql('postgres', q{SELECT rows_copied, copy_started_at FROM interop.subscription WHERE service = 'big'});
ok($tax->poll_query_until('postgres', q{
	SELECT failures >= 1 AND last_error LIKE 'could not reach peer%' FROM interop.subscription WHERE service = 'big'}),
	"provider down after $copied rows: the pull fails and waits");
$pop->start;
$pop->safe_psql('postgres', q{
	UPDATE big SET v = 'changed during the copy' WHERE id % 100 = 0;
	DELETE FROM big WHERE id BETWEEN 15000 AND 15100;
	INSERT INTO big SELECT i, 'added during the copy' FROM generate_series(30001, 30500) i;
});
ok(converges('big', 'big_copy'), 'after the provider restart the copy resumes and the tables are equal');
is($tax->safe_psql('postgres', qq{
	SELECT rows_copied >= 30000 AND copy_started_at = '$copy_started' FROM interop.subscription WHERE service = 'big'}), 't',
	'the copy went on from its cursor (the same copy, not a new one)');

# ---- kill -9 of the consumer's sync worker, mid-copy and mid-changes ----

$tax->safe_psql('postgres', qq{
	SELECT interop.unsubscribe('$POP', 'big');
	SELECT interop.subscribe('$POP', 'big', 'big_copy', every => '100 ms')});
$tax->poll_query_until('postgres', q{
	SELECT rows_copied >= 3000 AND phase = 'copy' FROM interop.subscription WHERE service = 'big'});
my ($sync, $phase, $copied_at_kill) = split /\|/, $tax->safe_psql('postgres', q{
	SELECT (SELECT pid FROM pg_stat_activity WHERE backend_type = 'interop sync'), phase, rows_copied
	FROM interop.subscription WHERE service = 'big'});
kill 'KILL', $sync;
is($phase, 'copy', "the sync worker is killed during the copy ($copied_at_kill of 30 400 rows copied)");
$tax->poll_query_until('postgres', 'SELECT true');
ok(converges('big', 'big_copy'), 'after kill -9 of the sync worker mid-copy the tables are equal');

my $writer = $pop->background_psql('postgres');
$writer->query_safe(q{
	CREATE PROCEDURE churn(n int) LANGUAGE plpgsql AS $$
	BEGIN
		FOR i IN 1 .. n LOOP
			UPDATE big SET v = 'churn ' || i WHERE id = 1 + (i * 7919) % 30000;
			DELETE FROM big WHERE id = 1 + (i * 104729) % 30000;
			INSERT INTO big VALUES (40000 + i, 'churn') ON CONFLICT (id) DO UPDATE SET v = 'churn again';
			COMMIT;
		END LOOP;
	END $$});
$writer->query_until(qr/started/, q{\echo started
	CALL churn(3000);
	\echo done
});
$tax->poll_query_until('postgres', q{SELECT changes_applied > 500 FROM interop.subscription WHERE service = 'big'});
$sync = $tax->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'interop sync'});
kill 'KILL', $sync;
$tax->poll_query_until('postgres', 'SELECT true');
$writer->query_safe('SELECT 1');
$writer->quit;
ok(converges('big', 'big_copy'), 'after kill -9 of the sync worker during a stream of changes the tables are equal');

# ---- a pruned change log ----

$tax->safe_psql('postgres', q{UPDATE interop.subscription SET next_pull = now() + interval '1 hour' WHERE service = 'register'});
my $started = $tax->safe_psql('postgres', q{SELECT copy_started_at FROM interop.subscription WHERE service = 'register'});
$pop->safe_psql('postgres', q{UPDATE register SET name = 'before the prune' WHERE id = 10});
cmp_ok($pop->safe_psql('postgres', q{SELECT interop.prune_changes('0 s')}), '>', 0, 'the provider prunes its change log');
$pop->safe_psql('postgres', q{UPDATE register SET name = 'after the prune' WHERE id = 11});
$tax->safe_psql('postgres', q{UPDATE interop.subscription SET next_pull = now() WHERE service = 'register';
	SELECT interop.wake_sync_worker()});
ok(converges('register', 'register_copy'), 'a consumer behind the pruned log copies again and is equal');
is($tax->safe_psql('postgres', qq{
	SELECT copy_started_at > '$started' FROM interop.subscription WHERE service = 'register'}), 't', 'with a new copy');
like($tax->safe_psql('postgres', q{
	SELECT string_agg(error_code || ' ' || error_message, ', ') FROM interop.message_log
	WHERE direction = 'out' AND service = 'register' AND status = 410}), qr/IX410 .*cursor_expired/,
	'after a 410 cursor_expired');

# the sync worker prunes entries older than interop.change_retention
$pop->safe_psql('postgres', q{
	INSERT INTO interop.change_log (source, key, at) VALUES ('register'::regclass, '{"id": 77}', now() - interval '2 hours');
	ALTER SYSTEM SET interop.change_retention = '1h';
	ALTER SYSTEM SET interop.sync_interval = '1s';
	SELECT pg_reload_conf();
});
ok($pop->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM interop.change_log WHERE at < now() - interval '1 hour'}),
	'the sync worker prunes the change log older than interop.change_retention');
is($pop->safe_psql('postgres', q{SELECT count(*) > 0 FROM interop.change_log WHERE source = 'register'::regclass}), 't',
	'and keeps the newer entries');

# ---- hostile cursors, sent by hand (signed by the consumer's node key) ----

# change_request(SINCE_JSON): (HTTP status, the answer's error code)
sub change_request
{
	my $since = shift;
	my $claims = $tax->safe_psql('postgres', qq{
		SELECT jsonb_build_object('iss', '$TAX', 'aud', '$POP', 'svc', 'register', 'params', '{}'::jsonb,
			'purpose', 'statistics', 'iat', extract(epoch FROM now())::bigint,
			'exp', extract(epoch FROM now())::bigint + 60, 'jti', gen_random_uuid(), 'since', '$since'::jsonb)});
	my $tmp = PostgreSQL::Test::Utils::tempdir();
	spew("$tmp/p.json", $claims);
	my $jws = sh("$JWS sign ES256 @{[node_key_file($tax)]} @{[node_chain_file($tax)]} \"\$(cat $tmp/p.json)\"");
	chomp $jws;
	my ($code, $body) = curl_gateway($pop, '/v1/changes', as => $tax, body => $jws);
	my $payload = (split /\./, $body)[1] // '';
	$payload =~ tr/-_/+\//;
	$payload = MIME::Base64::decode_base64($payload);
	my ($err) = $payload =~ /"code":\s*"([a-z_]+)"/;
	return ($code, $err // 'none');
}
is(join(' ', change_request('{"copy": "12x", "after": {}}')), '400 bad_request', 'a cursor that is not ours: 400');
my $xmin = $pop->safe_psql('postgres', 'SELECT pg_snapshot_xmin(pg_current_snapshot())');
is(join(' ', change_request(qq({"copy": "$xmin", "after": {"name": "x"}}))), '400 bad_request',
	'a copy cursor whose key is not the primary key: 400');
is(join(' ', change_request('"a string"')), '400 bad_request', 'since that is not an object: 400');
is(join(' ', change_request('{"from": "99999999999"}')), '410 cursor_expired',
	'a cursor from beyond the provider\'s transactions (a restored provider): 410');
is(join(' ', change_request('{"from": "1"}')), '410 cursor_expired', 'a cursor older than the change log: 410');
is(join(' ', change_request('null')), '200 none', 'null starts a copy');

# ---- the provider's table ----

my ($ret, $out, $err) = $pop->psql('postgres', 'TRUNCATE register');
like($err, qr/cannot truncate "public.register": it is published with track_changes/, 'TRUNCATE of a tracked table is refused');
$tax->safe_psql('postgres', qq{SELECT interop.unsubscribe('$POP', 'big')});
$pop->safe_psql('postgres', q{SELECT interop.unpublish('big')});
is($pop->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'big'::regclass),
	       (SELECT count(*) FROM interop.change_log WHERE source = 'big'::regclass)}), '0|0',
	'unpublishing removes the capture triggers and the table\'s change log');

done_testing();
