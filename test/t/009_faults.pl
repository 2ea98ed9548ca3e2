# 009_faults.pl: faults under load.  The consumer (tax) keeps two loads on
# the provider (population): a queue of asynchronous queries delivered by
# its sync worker, and a client calling interop.query() in a loop.  While
# they run:
#  - kill -9 of a provider gateway worker (the postmaster restarts the
#    cluster);
#  - a provider restart;
#  - kill -9 of the consumer's sync worker;
#  - the provider's message log on a full disk: it refuses to answer
#    (500, unsigned) rather than answer unlogged, and serves again once
#    there is space; the same for the consumer's log: interop.query()
#    fails rather than return unlogged rows;
#  - clock skew (test/fault/skewclock.c): a consumer clock 2 minutes ahead still works; 15 minutes
#    ahead is refused with clock_skew, and its queued queries fail with
#    that code instead of being retried.
# After each: every queued query has exactly one result (none lost), the
# provider ran each at most once (none duplicated), and every answer a
# client received is in the provider's log.
# The disk-full part needs a small file system: INTEROP_TEST_SMALLFS names
# a directory on one (scripts/check mounts a tmpfs there when run as root).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use IPC::Run ();
use InteropTest;

my $ca = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $pop = new_node('population', $POP, $ca, 'restart_after_crash' => 'on', 'interop.seal_interval' => 0,
	'interop.request_timeout' => "'5s'");
my $tax = new_node('tax', $TAX, $ca, 'interop.gateway_workers' => 0, 'restart_after_crash' => 'on',
	'interop.seal_interval' => 0, 'interop.sync_interval' => "'1s'", 'interop.request_timeout' => "'5s'");
$pop->safe_psql('postgres', qq{
	CREATE TABLE person (id text PRIMARY KEY, name text);
	INSERT INTO person SELECT 'P' || i, 'Person ' || i FROM generate_series(1, 200) i;
	SELECT interop.publish('person', 'person', filter_columns => '{id}', subject_column => 'id');
	SELECT interop.grant_access('person', '$TAX', purposes => '{audit}');
});
$tax->safe_psql('postgres', qq{
	SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}');
	CREATE TABLE batch (tag text, id bigint);
});
ok(wait_for_gateway($pop, "$ca/fedroot/ca.crt", $tax), 'the provider gateway is up');

my ($h, $calls);    # the client loop of the current fault
my @results;    # [fault, queued, done, failed, lost, duplicated, calls ok, calls failed, unlogged]

# queue(TAG, N): N asynchronous queries, remembered under TAG
sub queue
{
	my ($tag, $n) = @_;
	$tax->safe_psql('postgres', qq{
		INSERT INTO batch SELECT '$tag', interop.query_async('$POP', 'person',
			jsonb_build_object('id', 'P' || (i % 200 + 1)), 'audit') FROM generate_series(1, $n) i});
}

sub pending
{
	my $tag = shift;
	return $tax->safe_psql('postgres', qq{
		SELECT count(*) FROM batch b JOIN interop.async_request a USING (id) WHERE b.tag = '$tag' AND a.state = 'pending'});
}

# settle(TAG): until no query of TAG is pending
sub settle
{
	my $tag = shift;
	my $deadline = time() + 300;
	while (time() < $deadline)
	{
		my $p = eval { pending($tag) };
		return 1 if defined $p && $p eq '0';
		usleep(250_000);
	}
	return 0;
}

# caller(SECONDS): a client calling interop.query() in a loop; returns the
# IPC::Run harness and a ref to its output (one line per call: "ok" or the
# error's SQLSTATE and message)
sub caller_loop
{
	my $seconds = shift;
	my $conn = $tax->connstr('postgres');
	my $script = qq{end=\$((SECONDS + $seconds)); i=0
		while [ \$SECONDS -lt \$end ]; do i=\$((i + 1))
			out=\$(psql -XAtq -v VERBOSITY=verbose -d "$conn" -c "SELECT count(*) FROM interop.query('$POP', 'person', jsonb_build_object('id', 'P' || (\$i % 200 + 1)), 'audit')" 2>&1 | head -1)
			if [ "\$out" = 1 ]; then echo ok; else echo "\$out"; fi
		done};
	my $out = '';
	my $h = IPC::Run::start(['bash', '-c', $script], '>', \$out, '2>', \$out);
	return ($h, \$out);
}

# account(FAULT, TAG, CALLS_OUTPUT): check and record what a fault did
sub account
{
	my ($fault, $tag, $calls) = @_;
	ok(settle($tag), "$fault: the queued queries all finish")
	  or diag($tax->safe_psql('postgres', qq{
		SELECT a.id, a.attempts, a.next_attempt - clock_timestamp(), a.http_status, a.error_code, a.last_error
		FROM batch b JOIN interop.async_request a USING (id) WHERE b.tag = '$tag' AND a.state = 'pending' LIMIT 5}));
	my ($queued, $done, $failed, $one) = split /\|/, $tax->safe_psql('postgres', qq{
		SELECT count(*), count(*) FILTER (WHERE a.state = 'done'), count(*) FILTER (WHERE a.state = 'failed'),
		       count(*) FILTER (WHERE a.state = 'done' AND a.row_count = 1 AND a.response IS NOT NULL)
		FROM batch b JOIN interop.async_request a USING (id) WHERE b.tag = '$tag'});
	my $jtis = $tax->safe_psql('postgres', qq{
		SELECT string_agg(a.jti::text, ',') FROM batch b JOIN interop.async_request a USING (id)
		WHERE b.tag = '$tag' AND a.state = 'done'});
	# at the provider: how often each delivered jti ran (a replay is not a run)
	my ($ran, $dup) = split /\|/, $pop->safe_psql('postgres', qq{
		SELECT count(*), count(*) FILTER (WHERE runs > 1) FROM (
			SELECT jti, count(*) AS runs FROM interop.message_log
			WHERE direction = 'in' AND status = 200 AND replay_of IS NULL AND jti = ANY ('{$jtis}'::uuid[])
			GROUP BY jti) r});
	my $lost = $queued - $done - $failed;
	is($lost, 0, "$fault: no queued query is lost ($done done, $failed failed of $queued)");
	is($one, $done, "$fault: each delivered query has its verified answer");
	is($ran, $done, "$fault: the provider's log has a run of every delivered query");
	is($dup, 0, "$fault: no query ran twice at the provider");

	my (@lines, %errors);
	@lines = grep { length } split /\n/, ($calls // '');
	my $ok = grep { $_ eq 'ok' } @lines;
	for (grep { $_ ne 'ok' } @lines)
	{
		# an error with its SQLSTATE, or the consumer's own server restarting after a crash
		my ($state) = /^(?:psql:\S+ )?(?:ERROR|FATAL|WARNING):\s+(\w{5}):/;
		$state //= 'consumer restarting' if /^psql: error: connection to server .* (FATAL:  the database system is (in recovery mode|not yet accepting connections|starting up|shutting down)|server closed the connection unexpectedly)/
		  || /^(psql:\S+ )?server closed the connection unexpectedly/
		  # (the crash notice, as psql prints it when it reads it while the connection ends)
		  || /^(psql:\S+ )?WARNING:  terminating connection because of crash of another server process$/;
		$errors{$state // $_}++;
	}
	my $unclear = grep { !/^[A-Z0-9]{5}$/ && $_ ne 'consumer restarting' || /^XX/ } keys %errors;
	is($unclear, 0, "$fault: every failed call was a clear error with a SQLSTATE")
	  or diag(join "\n", grep { $_ ne 'ok' } @lines);
	# every answer the consumer logged as received is in the provider's log
	my $got = $tax->safe_psql('postgres', q{
		SELECT coalesce(string_agg(jti::text, ','), '') FROM interop.message_log
		WHERE direction = 'out' AND status = 200 AND service = 'person'});
	my $unlogged = $pop->safe_psql('postgres', qq{
		SELECT count(*) FROM unnest('{$got}'::uuid[]) j
		WHERE NOT EXISTS (SELECT 1 FROM interop.message_log l WHERE l.direction = 'in' AND l.status = 200 AND l.jti = j)});
	is($unlogged, 0, "$fault: every answer the consumer received is in the provider's log");
	push @results, [$fault, $queued, $done, $failed, $lost, $dup, $ok,
		scalar(@lines) - $ok . (%errors ? ' (' . join(', ', map { "$_ × $errors{$_}" } sort keys %errors) . ')' : ''),
		$unlogged];
}

# ---- the message log on a full disk ----
SKIP:
{
	my $fs = $ENV{INTEROP_TEST_SMALLFS};
	skip('no small file system (INTEROP_TEST_SMALLFS; scripts/check mounts one as root)', 1)
	  unless $fs && -d $fs && -w $fs;
	# fill(NODE): fill the small file system from NODE, one committed megabyte at a time, then by pages
	my $fill = sub {
		my $n = shift;
		$n->safe_psql('postgres', 'CREATE TABLE filler (x text) TABLESPACE small; ALTER TABLE filler ALTER x SET STORAGE PLAIN');
		for my $size (1_000_000, 8000, 100)
		{
			for (1 .. 100_000)
			{
				my ($rc) = $n->psql('postgres',
					"INSERT INTO filler SELECT repeat('x', 2000) FROM generate_series(1, $size / 2000 + 1)");
				last if $rc != 0;
			}
		}
	};
	# the log (its heap, TOAST and indexes) in the small tablespace
	my $move = sub {
		my ($n, $space) = @_;
		$n->safe_psql('postgres', qq{
			ALTER TABLE interop.message_log SET TABLESPACE $space;
			SELECT format('ALTER INDEX %s SET TABLESPACE $space', indexrelid::regclass)
			FROM pg_index WHERE indrelid = 'interop.message_log'::regclass \\gexec});
	};

	mkdir "$fs/pop";
	$pop->safe_psql('postgres', "CREATE TABLESPACE small LOCATION '$fs/pop'");
	$move->($pop, 'small');
	my $logged = $pop->safe_psql('postgres', 'SELECT count(*) FROM interop.message_log');
	$fill->($pop);
	note('the provider log is on a full disk: ' . `df -k $fs | tail -1`);
	queue('diskfull', 200);
	($h, $calls) = caller_loop(5);
	$h->finish;
	my @seen = split /\n/, $$calls;
	# the provider answers 500 with an unsigned body; the consumer trusts
	# no unsigned answer (IX011) and shows the provider's words in DETAIL
	my $refused = grep { /ERROR:\s+IX011: .*answered HTTP 500 without a signed body/ } @seen;
	cmp_ok($refused, '>', 0, "provider log disk full: calls are refused ($refused of " . scalar(@seen) . ')');
	my ($rc, $stdout, $stderr) = $tax->psql('postgres',
		qq{SELECT count(*) FROM interop.query('$POP', 'person', '{"id": "P1"}', 'audit')});
	like($stderr, qr/DETAIL:.*the provider could not log this exchange/,
		"...and the consumer's error shows the provider's reason");
	my $answered_while_full = grep { $_ eq 'ok' } @seen;
	my $grew = $pop->safe_psql('postgres', "SELECT count(*) - $logged FROM interop.message_log");
	cmp_ok($grew, '>=', $answered_while_full,
		"...and a call answered while the disk filled up ($answered_while_full) is in the provider's log ($grew more records)");
	like(slurp($pop->logfile), qr/could not (extend|write)[^\n]*No space left on device/,
		'...and the provider\'s server log says why');
	my ($code, $body) = curl_gateway($pop, '/v1/health', as => $tax);
	is("$code " . ($body =~ /the message log could not be written: .*No space left on device/ ? 'says why' : $body),
		'503 says why', '...while the gateway itself stays up, and tells a load balancer it is not ready, and why');
	is(pending('diskfull') > 0 ? 'waiting' : 'not waiting', 'waiting', '...and queued queries wait, retrying');
	$pop->safe_psql('postgres', 'DROP TABLE filler; CHECKPOINT');
	account('provider log on a full disk, then space freed', 'diskfull', $$calls);
	($code) = curl_gateway($pop, '/v1/health', as => $tax);
	is($code, '200', '...and ready again once the log is written');
	$move->($pop, 'pg_default');
	$pop->safe_psql('postgres', 'DROP TABLESPACE small');

	# the consumer's log on a full disk
	mkdir "$fs/tax";
	$tax->safe_psql('postgres', "CREATE TABLESPACE small LOCATION '$fs/tax'");
	$move->($tax, 'small');
	$fill->($tax);
	my $ran = $pop->safe_psql('postgres', "SELECT count(*) FROM interop.message_log WHERE direction = 'in'");
	($h, $calls) = caller_loop(4);
	$h->finish;
	@seen = split /\n/, $$calls;
	my $ok = grep { $_ eq 'ok' } @seen;
	my $logged_out = $tax->safe_psql('postgres', "SELECT count(*) FROM interop.message_log WHERE direction = 'out'");
	note("consumer log disk full: " . scalar(@seen) . " calls, $ok answered");
	cmp_ok(scalar(grep { /ERROR:\s+53100:|No space left/ } @seen), '>', 0,
		'consumer log disk full: interop.query() fails with disk_full rather than return unlogged rows');
	queue('diskfull2', 100);
	usleep(3_000_000);
	is(pending('diskfull2') > 0 ? 'waiting' : 'not waiting', 'waiting',
		'...and delivered answers that cannot be logged stay pending');
	$tax->safe_psql('postgres', 'DROP TABLE filler; CHECKPOINT');
	account("consumer log on a full disk, then space freed", 'diskfull2', $$calls);
	$move->($tax, 'pg_default');
	$tax->safe_psql('postgres', 'DROP TABLESPACE small');
}

# ---- kill -9 of a provider gateway worker ----
queue('gw', 2000);
($h, $calls) = caller_loop(8);
usleep(1_000_000);
my ($gw) = split /\n/, $pop->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'interop gateway' ORDER BY pid");
my $before = pending('gw');
kill 'KILL', $gw;
$h->finish;
note("kill -9 of gateway worker $gw with $before queries pending");
ok(wait_for_gateway($pop, "$ca/fedroot/ca.crt", $tax), 'the provider gateway is back after kill -9 of a worker');
account('kill -9 of a provider gateway worker', 'gw', $$calls);

# ---- a provider restart ----
queue('restart', 2000);
($h, $calls) = caller_loop(8);
usleep(1_000_000);
$before = pending('restart');
$pop->restart;
$h->finish;
note("provider restarted with $before queries pending");
account('provider restart', 'restart', $$calls);

# ---- kill -9 of the consumer's sync worker ----
queue('sync', 2000);
($h, $calls) = caller_loop(6);
usleep(1_000_000);
my $sync = $tax->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'interop sync'");
$before = pending('sync');
kill 'KILL', $sync;
$h->finish;
note("kill -9 of the sync worker $sync with $before queries pending");
account("kill -9 of the consumer's sync worker", 'sync', $$calls);

# ---- clock skew ----
# a wall clock moved by an LD_PRELOAD library (test/fault/skewclock.c)
my $skewlib = PostgreSQL::Test::Utils::tempdir() . '/skewclock.so';
system('cc', '-shared', '-fPIC', '-o', $skewlib, "$ENV{TESTDIR}/test/fault/skewclock.c", '-ldl');
SKIP:
{
	skip('no C compiler to build test/fault/skewclock.c', 1) unless -f $skewlib;
	# restart the consumer with its clock SKEW seconds ahead
	my $skew = sub {
		my $s = shift;
		$tax->stop;
		local $ENV{LD_PRELOAD} = $s ? $skewlib : '';
		local $ENV{INTEROP_CLOCK_SKEW} = $s;
		$tax->start;
	};
	$skew->(120);
	my $ahead = $tax->safe_psql('postgres', 'SELECT extract(epoch FROM now())::bigint') - int(time());
	cmp_ok($ahead, '>=', 110, "the consumer's clock runs $ahead s ahead");
	queue('skew2', 200);
	($h, $calls) = caller_loop(3);
	$h->finish;
	account('consumer clock 2 min ahead (within interop.max_clock_skew)', 'skew2', $$calls);
	is($tax->safe_psql('postgres', "SELECT count(*) FROM batch b JOIN interop.async_request a USING (id)
		WHERE b.tag = 'skew2' AND a.state = 'done'"), '200', '...all its queries are answered');

	$skew->(900);
	queue('skew15', 50);
	($h, $calls) = caller_loop(2);
	$h->finish;
	like($$calls, qr/ERROR:  IX401: .*clock_skew/, 'consumer clock 15 min ahead: calls are refused with the provider\'s clock_skew');
	ok(settle('skew15'), '...and its queued queries end');
	is($tax->safe_psql('postgres', q{SELECT string_agg(DISTINCT format('%s %s %s attempt(s)', a.state, a.error_code, a.attempts)
		|| CASE WHEN a.last_error LIKE '%clock_skew%' THEN ', clock_skew' ELSE ', ' || a.last_error END, ',')
		FROM batch b JOIN interop.async_request a USING (id) WHERE b.tag = 'skew15'}),
		'failed IX401 1 attempt(s), clock_skew', '...failed with clock_skew (IX401) at the first attempt, not retried');
	account('consumer clock 15 min ahead (beyond interop.max_clock_skew)', 'skew15', $$calls);
	$skew->(0);
}

# ---- the logs are whole ----
for my $n ($pop, $tax)
{
	$n->safe_psql('postgres', 'SELECT interop.seal_log()');
	is($n->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0',
		$n->name . ': the message log verifies after every fault');
}

my $md = "| fault | queued | done | failed | lost | duplicated | calls answered | calls failed (SQLSTATE × n) | answers not in the provider's log |\n"
  . "|---|---|---|---|---|---|---|---|---|\n"
  . join('', map { '| ' . join(' | ', @$_) . " |\n" } @results);
spew("$PostgreSQL::Test::Utils::tmp_check/faults-table.md", $md);
note($md);

done_testing();
