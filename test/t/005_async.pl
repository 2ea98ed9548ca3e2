# 005_async.pl: asynchronous queries delivered by the sync worker.  Proves:
#  - query_async() queues in the caller's transaction (a rollback sends
#    nothing) and wait()/result() give the verified rows; completion is
#    NOTIFYed on interop_async; with synchronous_commit = off a delivered
#    answer and its record are flushed before wait() sees them;
#  - a refusal fails at once (no retry) and result() raises its SQLSTATE;
#  - a provider down during a load: requests wait with backoff and are all
#    delivered when it is back, each exactly once at the provider;
#  - kill -9 of the sync worker in the middle of a load: every request
#    still gets exactly one result, and the provider runs each at most once;
#  - the counters: interop.stat_gateway, interop.stat_peer and GET /metrics;
#  - peer catalogs: fetched and verified by the sync worker, then 304 while
#    unchanged (ETag), refetched when they change, and an unreachable peer
#    is retried with a growing backoff;
#  - an idle sync worker sleeps (its CPU time over 3 s), and so does one
#    with nothing scheduled at all (its wake-ups over 3 s);
#  - a session that holds the seal lock does not stop the sync worker: the
#    seal round is skipped and logged, deliveries go on.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use InteropTest;
use Time::HiRes ();

my $ca = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $pop = new_node('population', $POP, $ca);
my $tax = new_node('tax', $TAX, $ca, 'interop.gateway_workers' => 0, 'restart_after_crash' => 'on',
	'interop.seal_interval' => 0, 'interop.sync_interval' => "'1s'");

$pop->safe_psql('postgres', qq{
	CREATE TABLE person (id text PRIMARY KEY, name text);
	INSERT INTO person SELECT 'P' || i, 'Person ' || i FROM generate_series(1, 1000) i;
	SELECT interop.publish('person', 'person', filter_columns => '{id}', subject_column => 'id');
	SELECT interop.grant_access('person', '$TAX', purposes => '{tax assessment}');
});
$tax->safe_psql('postgres', "SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}')");
ok(wait_for_gateway($pop, "$ca/fedroot/ca.crt", $tax), 'the provider gateway is up');

# ---- the happy path ----

my $id = $tax->safe_psql('postgres',
	qq{SELECT interop.query_async('$POP', 'person', '{"id":"P7"}', 'tax assessment')});
is($tax->safe_psql('postgres', "SELECT interop.wait($id)"), 'done', 'wait() returns once the request is done');
is($tax->safe_psql('postgres', "SELECT r->>'name' FROM interop.result($id) r"), 'Person 7', 'result() gives the row');
is($tax->safe_psql('postgres', qq{
	SELECT a.attempts, m.status, m.row_count, m.jti = a.jti
	FROM interop.async_request a JOIN interop.message_log m ON m.jti = a.jti WHERE a.id = $id}),
	'1|200|1|t', 'one attempt, logged by the consumer with the request\'s jti');

my $before = $pop->safe_psql('postgres', q{SELECT count(*) FROM interop.message_log});
$tax->safe_psql('postgres', qq{BEGIN;
	SELECT interop.query_async('$POP', 'person', '{"id":"P8"}', 'tax assessment');
	ROLLBACK;});
sleep(1);
is($pop->safe_psql('postgres', q{SELECT count(*) FROM interop.message_log}), $before,
	'a request queued in a transaction that rolls back is never sent');

my $listener = $tax->background_psql('postgres');
$listener->query_safe('LISTEN interop_async');
$id = $tax->safe_psql('postgres', qq{SELECT interop.query_async('$POP', 'person', '{"id":"P9"}', 'tax assessment')});
$tax->safe_psql('postgres', "SELECT interop.wait($id)");
my $heard = $listener->query_safe('SELECT 1');
like($listener->{stderr} . $heard, qr/notification "interop_async" with payload "$id"/,
	'completion is NOTIFYed on interop_async with the id');
$listener->quit;

# with synchronous_commit = off, a delivered answer and its record are
# flushed before a caller can see them (the WAL writer, woken by the first
# delivery, does not flush again for 10 s)
lazy_commits($tax, 1);
$id = $tax->safe_psql('postgres', qq{SELECT interop.query_async('$POP', 'person', '{"id":"P10"}', 'tax assessment')});
is($tax->safe_psql('postgres', "SELECT interop.wait($id)"), 'done', 'with synchronous_commit = off, a delivery');
my $wal_start = $tax->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
$id = $tax->safe_psql('postgres', qq{SELECT interop.query_async('$POP', 'person', '{"id":"P12"}', 'tax assessment')});
my ($flushed, $xid) = $tax->safe_psql('postgres', qq{SELECT interop.wait($id);
	SELECT 'at:' || pg_current_wal_flush_lsn() || ' ' || xmin FROM interop.async_request WHERE id = $id})
  =~ /at:(\S+) (\d+)/;
is(commit_flushed($tax, $wal_start, $flushed, $xid), '1', '...and the next: its answer is flushed once a caller sees it');
is($tax->safe_psql('postgres', qq{
	SELECT m.xmin = a.xmin FROM interop.async_request a JOIN interop.message_log m ON m.jti = a.jti WHERE a.id = $id}),
	't', '...with its record, committed with it');
lazy_commits($tax, 0);

# ---- refusals and errors ----

$id = $tax->safe_psql('postgres', qq{SELECT interop.query_async('$POP', 'person', '{"id":"P1"}', 'marketing')});
is($tax->safe_psql('postgres', "SELECT interop.wait($id)"), 'failed', 'a refusal fails the request');
is($tax->safe_psql('postgres', "SELECT attempts, http_status, error_code FROM interop.async_request WHERE id = $id"),
	'1|403|IX403', 'at once, without retrying');
my ($ret, $out, $err) = $tax->psql('postgres', "SELECT * FROM interop.result($id)", extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/IX403: asynchronous request $id failed: .*purpose_not_allowed/, 'result() raises the refusal with its SQLSTATE');
($ret, $out, $err) = $tax->psql('postgres', "SELECT interop.query_async('MN/GOV/9/nobody', 'person')");
like($err, qr/peer "MN\/GOV\/9\/nobody" is not known/, 'an unknown peer is refused when queued');
($ret, $out, $err) = $tax->psql('postgres', "SELECT interop.result(999999)");
like($err, qr/asynchronous request 999999 does not exist/, 'result() of an unknown id');

# ---- a provider down during a load ----

$pop->stop;
$tax->safe_psql('postgres', qq{
	SELECT interop.query_async('$POP', 'person', jsonb_build_object('id', 'P' || i), 'tax assessment')
	FROM generate_series(101, 150) i});
ok($tax->poll_query_until('postgres', q{
	SELECT count(*) = 50 FROM interop.async_request
	WHERE state = 'pending' AND attempts >= 2 AND error_code = '08006'}),
	'with the provider down, requests stay pending and are retried');
$pop->start;
ok($tax->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM interop.async_request WHERE state = 'pending'}, 't'),
	'when it is back, every request is delivered');
is($tax->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE state = 'done' AND row_count = 1) FROM interop.async_request
	WHERE substr(params->>'id', 2)::int BETWEEN 101 AND 150}), '50', 'all 50 done, one row each');
is($pop->safe_psql('postgres', qq{
	SELECT count(*), count(DISTINCT jti) FROM interop.message_log
	WHERE direction = 'in' AND replay_of IS NULL AND substr(subject, 2)::int BETWEEN 101 AND 150}),
	'50|50', 'the provider ran each exactly once');

# ---- kill -9 of the sync worker in the middle of a load ----

$tax->safe_psql('postgres', qq{
	SELECT interop.query_async('$POP', 'person', jsonb_build_object('id', 'P' || i), 'tax assessment')
	FROM generate_series(201, 1000) i});
$tax->poll_query_until('postgres', q{
	SELECT count(*) > 20 FROM interop.async_request WHERE state = 'done' AND substr(params->>'id', 2)::int >= 201});
my ($pending, $sync) = split /\|/, $tax->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM interop.async_request WHERE state = 'pending'),
	       (SELECT pid FROM pg_stat_activity WHERE backend_type = 'interop sync')});
kill 'KILL', $sync;
cmp_ok($pending, '>', 0, "the sync worker is killed with $pending requests still pending");
ok($tax->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM interop.async_request WHERE state = 'pending'}, 't'),
	'after kill -9 of the sync worker mid-load, the restarted worker finishes the load');
is($tax->safe_psql('postgres', q{
	SELECT count(*), count(*) FILTER (WHERE state = 'done' AND row_count = 1)
	FROM interop.async_request WHERE substr(params->>'id', 2)::int BETWEEN 201 AND 1000}), '800|800',
	'every request has exactly one result');
is($pop->safe_psql('postgres', qq{
	SELECT count(*) = count(DISTINCT jti) AND count(*) = 800 FROM interop.message_log
	WHERE direction = 'in' AND replay_of IS NULL AND status = 200 AND substr(subject, 2)::int BETWEEN 201 AND 1000}),
	't', 'and the provider ran each exactly once (a resent request is answered from its log)');

# ---- metrics ----

# counters start with the server: make a refusal and a failed call now
$tax->psql('postgres', qq{SELECT * FROM interop.query('$POP', 'person', '{"id":"P1"}', 'marketing')});
$tax->safe_psql('postgres', q{SELECT interop.add_peer('MN/GOV/9000009/down', 'https://127.0.0.1:1')});
$tax->psql('postgres', q{SELECT * FROM interop.query('MN/GOV/9000009/down', 'person')});

like($pop->safe_psql('postgres', q{
	SELECT requests FROM interop.stat_gateway WHERE service = 'person' AND status = 200}),
	qr/^\d{3,}$/, 'stat_gateway counts the provider\'s answers by service and status');
is($pop->safe_psql('postgres', q{
	SELECT requests FROM interop.stat_gateway WHERE service = 'person' AND status = 403}),
	'1', 'and its refusals');
like($tax->safe_psql('postgres', qq{
	SELECT calls, last_error LIKE 'could not reach peer%' FROM interop.stat_peer WHERE peer = 'MN/GOV/9000009/down' AND status = 0}),
	qr/^\d+\|t$/, 'stat_peer counts the calls that got no answer, with the last error');
like($tax->safe_psql('postgres', qq{
	SELECT calls FROM interop.stat_peer WHERE peer = '$POP' AND status = 200}),
	qr/^\d{3,}$/, 'and the answered ones');
my ($code, $body) = curl_gateway($pop, '/metrics', as => $tax);
is($code, '200', 'GET /metrics answers a loopback client');
like($body, qr/^interop_gateway_requests_total\{service="person",status="200"\} \d+$/m,
	'with requests by service and status in Prometheus text format');
like($body, qr/^interop_gateway_request_duration_seconds_bucket\{le="\+Inf"\} \d+$/m, 'a latency histogram');
like($body, qr/^interop_async_requests\{state="pending"\} 0$/m, 'and the async queue by state');
# group commit: every logged answer left after a flush, and under the load
# above (16 requests in flight) flushes served more than one answer each.
# The records since the server started (the counters start with it) counted
# first; the metrics then (an answer whose record is
# committed may still be held for a moment by another worker: ask again)
my $logged = $pop->safe_psql('postgres', q{
	SELECT count(*) FROM interop.message_log WHERE direction = 'in' AND at >= pg_postmaster_start_time()});
my ($flushes, $answers, $metrics);
for my $try (1 .. 20)
{
	(undef, $metrics) = curl_gateway($pop, '/metrics', as => $tax);
	($flushes) = $metrics =~ /^interop_gateway_group_flushes_total (\d+)$/m;
	($answers) = $metrics =~ /^interop_gateway_group_answers_total (\d+)$/m;
	last if ($answers // 0) >= $logged;
	Time::HiRes::usleep(200_000);
}
cmp_ok($answers // 0, '>=', $logged, "the gateway sent its $logged logged answers after group flushes (" . ($answers // 'none') . ' answers)');
cmp_ok($answers // 0, '>', $flushes // 0, 'in fewer flushes (' . ($flushes // 'none') . ')');
($code, $body) = curl_gateway($pop, '/metrics', as => $tax, method => 'POST', body => 'x');
is($code, '405', 'POST /metrics is refused');

# ---- peer catalogs ----

ok($tax->poll_query_until('postgres', qq{
	SELECT services \@> '[{"name": "person"}]' AND etag IS NOT NULL AND failures = 0
	FROM interop.peer_catalog WHERE peer::text = '$POP'}), 'the sync worker fetches and stores the peer\'s catalog');
my $fetched = $tax->safe_psql('postgres', qq{SELECT fetched_at FROM interop.peer_catalog WHERE peer::text = '$POP'});
ok($tax->poll_query_until('postgres', qq{
	SELECT checked_at > '$fetched'::timestamptz + interval '1 s' AND fetched_at = '$fetched'
	FROM interop.peer_catalog WHERE peer::text = '$POP'}),
	'an unchanged catalog is checked again every sync_interval and not refetched (304)');
like($pop->safe_psql('postgres', q{SELECT requests FROM interop.stat_gateway WHERE service = '/v1/catalog' AND status = 304}),
	qr/^\d+$/, 'the provider answered 304 Not Modified');
# If-None-Match as HTTP has it: a list, weak tags, "*"
my $etag = $tax->safe_psql('postgres', qq{SELECT etag FROM interop.peer_catalog WHERE peer::text = '$POP'});
my %none_match = (
	qq{"x", $etag}  => '304',
	qq{W/$etag}     => '304',
	'*'             => '304',
	qq{"x", W/"y"}  => '200',
	qq{"x"}         => '200');
for my $h (sort keys %none_match)
{
	($code) = curl_gateway($pop, '/v1/catalog', as => $tax, extra => [ '-H', "If-None-Match: $h" ]);
	is($code, $none_match{$h}, "GET /v1/catalog with If-None-Match: $h");
}
$pop->safe_psql('postgres', qq{
	CREATE VIEW person_name AS SELECT id, name FROM person;
	SELECT interop.publish('person_name', 'person_name', filter_columns => '{id}');
	SELECT interop.grant_access('person_name', '$TAX');});
ok($tax->poll_query_until('postgres', qq{
	SELECT services \@> '[{"name": "person_name"}]' AND fetched_at > '$fetched'
	FROM interop.peer_catalog WHERE peer::text = '$POP'}), 'a changed catalog is fetched again');
$pop->stop;
ok($tax->poll_query_until('postgres', qq{
	SELECT failures >= 3 AND last_error LIKE 'could not reach peer%' AND next_check - checked_at >= interval '20 s'
	FROM interop.peer_catalog WHERE peer::text = '$POP'}),
	'an unreachable peer is marked, and checked again after a growing backoff');
is($tax->safe_psql('postgres', qq{SELECT services \@> '[{"name": "person_name"}]' FROM interop.peer_catalog WHERE peer::text = '$POP'}),
	't', 'and its last verified catalog is kept');

# ---- an idle sync worker sleeps ----

# cpu_ticks(PID): user + system CPU time of a process, in clock ticks
sub cpu_ticks
{
	my @f = split ' ', slurp("/proc/$_[0]/stat") =~ s/^.*\) //r;
	return $f[11] + $f[12];
}
my $worker = $tax->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'interop sync'});
my $t1 = cpu_ticks($worker);
sleep(3);
my $used = cpu_ticks($worker) - $t1;
cmp_ok($used, '<', 30, "an idle sync worker does not spin ($used CPU ticks in 3 s; a busy loop would use about 300)");

# a provider with nothing scheduled at all (no peers, no queue): its sync
# worker wakes rarely, not every 10 ms (it did, when "nothing due" read as "due now")
$pop->start;
sub wakeups { return (slurp("/proc/$_[0]/status") =~ /^voluntary_ctxt_switches:\s+(\d+)/m)[0] }
$pop->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'interop sync'})
  or die "no sync worker on population";
sleep(1);
my $pworker = $pop->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'interop sync'});
my $w1 = wakeups($pworker);
sleep(3);
my $woke = wakeups($pworker) - $w1;
cmp_ok($woke, '<', 30, "the sync worker of a node with nothing scheduled sleeps ($woke wake-ups in 3 s; a 10 ms loop makes 300)");

# ---- a lock held by a session does not stop the sync worker ----
$tax->append_conf('postgresql.conf', "interop.seal_interval = '1s'");
$tax->reload;
my $holder = $tax->background_psql('postgres');
$holder->query_safe('BEGIN');
$holder->query_safe('LOCK TABLE interop.log_seal IN SHARE MODE');
ok($tax->wait_for_log(qr/interop sync: sealing the logs skipped: canceling statement due to lock timeout/),
	'a seal round that would wait for a session\'s lock is skipped and logged');
$id = $tax->safe_psql('postgres', qq{SELECT interop.query_async('$POP', 'person', '{"id":"P11"}', 'tax assessment')});
is($tax->safe_psql('postgres', "SELECT interop.wait($id, '20 s')"), 'done', 'meanwhile deliveries go on');
$holder->query_safe('COMMIT');
$holder->quit;
my $sealed = $tax->safe_psql('postgres', 'SELECT count(*) FROM interop.log_seal');
$tax->poll_query_until('postgres', "SELECT count(*) > $sealed FROM interop.log_seal") or diag('no seal after the lock');
cmp_ok($tax->safe_psql('postgres', 'SELECT count(*) FROM interop.log_seal'), '>', $sealed, 'sealing resumes once the lock is gone');

done_testing();
