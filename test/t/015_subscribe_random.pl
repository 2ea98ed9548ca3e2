# 015_subscribe_random.pl: a subscription under random load, compared with
# its source row for row.  For a bounded time, two provider sessions run
# random transactions on a tracked table with a composite primary key
# (text, int): inserts, updates of values and of key columns, deletes, the
# same key written several times in one transaction, small and large
# (every row of the table) transactions, and transactions held open while
# later ones commit; a TRUNCATE is tried and must be refused.  Meanwhile
# the subscription pulls with small pages (max_rows 50 to 500), the
# consumer's sync worker is killed (-9) and the provider restarted at
# random moments.  Proves that
#  - whenever the writers are paused and the subscription says it is in
#    sync with everything committed before the pause, the copy equals the
#    source, every row (it never claims to be in sync while it is not);
#  - at the end the copy equals the source, every row.
#
# The run is seeded: INTEROP_RANDOM_SEED replays the same operations (not
# the same interleaving with the workers); the seed is printed.
# INTEROP_RANDOM_SECONDS (default 40) bounds the random phase,
# INTEROP_RANDOM_ROWS (default 100 000) the table.  make check runs the
# defaults; a longer run: INTEROP_RANDOM_SECONDS=1800 prove test/t/015_subscribe_random.pl
# (see docs/operations.md, "Subscriptions").
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use InteropTest;

my $seed = $ENV{INTEROP_RANDOM_SEED} // int(rand(2**31));
my $seconds = $ENV{INTEROP_RANDOM_SECONDS} // 40;
my $rows = $ENV{INTEROP_RANDOM_ROWS} // 100_000;
srand($seed);
diag("seed $seed, $seconds s, $rows rows (replay: INTEROP_RANDOM_SEED=$seed)");

my $ca = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $pop = new_node('population', $POP, $ca, 'interop.seal_interval' => 0);
my $tax = new_node('tax', $TAX, $ca, 'interop.gateway_workers' => 0, 'interop.seal_interval' => 0,
	'restart_after_crash' => 'on');
my $page = 50 + int(rand(451));
diag("page size (max_rows) $page");

$pop->safe_psql('postgres', qq{
	CREATE TABLE reg (a text, b bigint, v int NOT NULL, note text, PRIMARY KEY (a, b));
	INSERT INTO reg SELECT 'k' || (i % 7), i, 0, md5(i::text) FROM generate_series(1, $rows) i;
	SELECT interop.publish('reg', 'reg', max_rows => $page, track_changes => true);
	SELECT interop.grant_access('reg', '$TAX');
});
$tax->safe_psql('postgres', qq{
	SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}');
	CREATE TABLE reg_copy (a text, b bigint, v int NOT NULL, note text, PRIMARY KEY (a, b));
});
ok(wait_for_gateway($pop, "$ca/fedroot/ca.crt", $tax), 'the provider gateway is up');
$tax->safe_psql('postgres', qq{SELECT interop.subscribe('$POP', 'reg', 'reg_copy', every => '100 ms')});

sub digest
{
	my ($node, $table) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t.a, t.b)), '') FROM $table t");
}

# ---- the writers ----
my $next_b = $rows + 1;    # new keys never collide
my %sessions;
sub session
{
	my $name = shift;
	$sessions{$name} //= $pop->background_psql('postgres', on_error_stop => 0);
	return $sessions{$name};
}
sub drop_sessions
{
	for (values %sessions) { eval { $_->quit } }
	%sessions = ();
}
my ($largest, $transactions, $ops, $large) = (0, 0, 0, 0);

# one random statement, as SQL, and how many rows it may write at most
sub random_statement
{
	my $own = shift;    # only rows of its own: a transaction held open must not lock rows others write
	my $r = rand();
	$r = $r < 0.5 ? 0.1 : 0.85 if $own;
	my $m = 200 + int(rand(1800));
	my $k = int(rand($m));
	if ($r < 0.30)
	{
		my $n = 1 + int(rand(50));
		my $from = $next_b;
		$next_b += $n;
		return ("INSERT INTO reg SELECT 'k' || (i % 7), i, 1, 'new' FROM generate_series($from, @{[$from + $n - 1]}) i", $n);
	}
	return ("UPDATE reg SET v = v + 1, note = md5(note) WHERE b % $m = $k", int($rows / $m)) if $r < 0.50;
	if ($r < 0.58)
	{
		# a key column changes: a new b, so no other row has it
		my $shift = $next_b;
		$next_b += $rows + 1000;
		return ("UPDATE reg SET b = b + $shift WHERE b % $m = $k AND b < $rows", int($rows / $m));
	}
	return ("UPDATE reg SET a = a || 'x' WHERE b % $m = $k AND length(a) < 6", int($rows / $m)) if $r < 0.64;
	return ("DELETE FROM reg WHERE b % $m = $k", int($rows / $m)) if $r < 0.80;
	if ($r < 0.92)
	{
		# the same key several times in one statement sequence
		my $b = $next_b++;
		return ("INSERT INTO reg VALUES ('same', $b, 1, 'one'); UPDATE reg SET v = 2 WHERE (a, b) = ('same', $b); "
			  . "DELETE FROM reg WHERE (a, b) = ('same', $b); INSERT INTO reg VALUES ('same', $b, 3, 'again'); "
			  . "UPDATE reg SET a = 'same2' WHERE (a, b) = ('same', $b)", 5);
	}
	if ($r < 0.94 && $large < 2)
	{
		$large++;
		return ("UPDATE reg SET v = v + 1", $rows);    # every row: a large transaction
	}
	return ("SELECT 1", 0);
}

# a transaction of 1 to 4 statements in session NAME; held open (not committed) if $hold
sub transaction
{
	my ($name, $hold) = @_;
	my $s = session($name);
	my ($sql, $size) = ('', 0);
	for (1 .. 1 + int(rand(4)))
	{
		my ($st, $n) = random_statement($hold);
		$sql .= "$st;\n";
		$size += $n;
		$ops++;
	}
	$s->query("BEGIN;\n$sql");
	$largest = $size if $size > $largest;
	$s->query('COMMIT') unless $hold;
	$transactions++;
}

my ($kills, $restarts, $checks, $lies) = (0, 0, 0, 0);
my $copied = 0;

# pause: no transaction open; wait until the subscription says it has all
# committed before now, then the tables must be equal
sub check_point
{
	$_->query('COMMIT') for values %sessions;
	my $t0 = $pop->safe_psql('postgres', 'SELECT clock_timestamp()');
	my $deadline = time() + 180;
	my $claims = 0;
	while (time() < $deadline)
	{
		$claims = $tax->safe_psql('postgres', qq{
			SELECT phase = 'sync' AND synced_at > '$t0' AND last_error IS NULL FROM interop.subscription}) eq 't';
		last if $claims;
		usleep(200_000);
	}
	return unless $claims;
	$checks++;
	my ($want, $got) = (digest($pop, 'reg'), digest($tax, 'reg_copy'));
	if ($want ne $got)
	{
		$lies++;
		diag("the subscription claims to be in sync since $t0, but: provider $want, consumer $got");
		diag($tax->safe_psql('postgres', 'SELECT cursor, synced_at, last_pull_at FROM interop.subscription'));
		diag($pop->safe_psql('postgres', q{SELECT pid, backend_type, backend_xid, backend_xmin, state, left(query, 60) FROM pg_stat_activity
			WHERE backend_xid IS NOT NULL OR backend_xmin IS NOT NULL}));
		diag($pop->safe_psql('postgres', q{SELECT id, at, status, row_count, interop.jws_payload(interop.message_jws(response)::interop.jws)->'next',
			interop.jws_payload(interop.message_jws(response)::interop.jws)->'more' FROM interop.message_log WHERE service = 'reg' ORDER BY id DESC LIMIT 4}));
		diag($pop->safe_psql('postgres', q{SELECT min(tx), max(tx), count(*) FROM interop.change_log}));
		my %p = map { split /\t/, $_, 2 } split /\n/, $pop->safe_psql('postgres', q{SELECT a || '/' || b, t::text FROM reg t}, extra_params => ['-F', "\t"]);
		my %c = map { split /\t/, $_, 2 } split /\n/, $tax->safe_psql('postgres', q{SELECT a || '/' || b, t::text FROM reg_copy t}, extra_params => ['-F', "\t"]);
		my @only_p = grep { !exists $c{$_} } sort keys %p;
		my @only_c = grep { !exists $p{$_} } sort keys %c;
		my @diff = grep { exists $c{$_} && $c{$_} ne $p{$_} } sort keys %p;
		diag(scalar(@only_p) . " only at the provider (@only_p[0..4]), " . scalar(@only_c) . " only at the consumer (@only_c[0..4]), "
			. scalar(@diff) . " differ (@diff[0..4])");
		for my $k ((@only_p, @only_c, @diff)[0 .. 2])
		{
			next unless defined $k;
			my ($a, $b) = split m{/}, $k;
			diag("$k: provider " . ($p{$k} // 'none') . ", consumer " . ($c{$k} // 'none'));
			diag($pop->safe_psql('postgres', qq{SELECT id, tx, at FROM interop.change_log WHERE key = jsonb_build_object('a', '$a', 'b', ${b}::bigint) ORDER BY id}));
		}
	}
}

my $end = time() + $seconds;
my $next_check = time() + 8;
while (time() < $end)
{
	my $r = rand();
	if ($r < 0.55) { transaction('a', 0) }
	elsif ($r < 0.75)
	{
		# a long-open transaction commits after later ones
		transaction('b', 1);
		transaction('a', 0) for 1 .. 1 + int(rand(3));
		session('b')->query('COMMIT');
	}
	elsif ($r < 0.78)
	{
		my (undef, undef, $err) = $pop->psql('postgres', 'TRUNCATE reg');
		die "TRUNCATE was not refused: $err" unless $err =~ /cannot truncate/;
	}
	elsif ($r < 0.84)
	{
		my $pid = $tax->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'interop sync'});
		if ($pid)
		{
			kill 'KILL', $pid;
			$kills++;
			$tax->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'interop sync'});
		}
	}
	elsif ($r < 0.87)
	{
		drop_sessions();
		$pop->restart;
		$restarts++;
		wait_for_gateway($pop, "$ca/fedroot/ca.crt", $tax);
	}
	if (time() >= $next_check)
	{
		my $t = time();
		check_point();
		$end += time() - $t;    # the random phase does not count the pauses
		$next_check = time() + 8 + rand(8);
	}
	# at least one large transaction in every run, half way
	if ($large == 0 && time() > $end - $seconds / 2)
	{
		session('a')->query("BEGIN; UPDATE reg SET v = v + 1; COMMIT;");
		$large++;
		$largest = $rows if $rows > $largest;
		$transactions++;
	}
	usleep(50_000);
}
check_point();
drop_sessions();

# ---- the end: every row ----
my $want = digest($pop, 'reg');
my $got = '';
my $deadline = time() + 300;
while (time() < $deadline)
{
	$got = digest($tax, 'reg_copy');
	last if $got eq $want;
	usleep(500_000);
}
diag("$transactions transactions, $ops statements, largest up to $largest rows; $kills kills of the consumer's sync worker, "
	  . "$restarts provider restarts; $checks in-sync claims checked");
is($got, $want, 'at the end the copy equals the source, every row');
is($lies, 0, "the subscription never claimed to be in sync while it was not ($checks claims checked)");
cmp_ok($checks, '>=', 1, 'at least one in-sync claim was checked');

done_testing();
