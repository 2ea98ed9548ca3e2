# FailoverLoad: a provider fails over while a consumer works, and what the
# consumer got is checked against the new primary.  Shared by the failover
# tests (020 with streaming replication driven by the test, 021 under
# pg_auto_failover).
#
# The provider publishes "person" (id, name, version) with track_changes
# and grants it to the consumer; the consumer knows the provider's nodes by
# their base URLs and subscribes to "person" into "person_copy".  A new
# primary is reached through a closure (SQL text in, output out), so the
# nodes may be PostgreSQL::Test::Cluster nodes or not.
package FailoverLoad;
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use InteropTest;
use Exporter 'import';
our @EXPORT = qw(under_load check_after);

my @children;
END { stop_child($_) for @children }

# under_load(%opt): the load, opt{act} (the failover: it returns when the
# new primary serves), 5 s more of load.  The load: three consumer sessions
# running opt{ask} back to back (an answer is opt{expect}), each outcome
# with its time; the row P<i> of the source updated every 20 ms on
# opt{writer} (a connection string of the primary) until that fails; 20
# asynchronous queries queued just before opt{act}.  opt: consumer (a
# Cluster), provider (member id), dir, name.  Returns the outage (the
# longest time without an answer from a second before the failover on),
# the answers and failures, the consumer's answered jtis since the start,
# and the first asynchronous request's id.
sub under_load
{
	my (%o) = @_;
	my ($tax, $name) = ($o{consumer}, $o{name});
	my $stop = "$o{dir}/stop-$name";
	my $outcomes = "$o{dir}/outcomes-$name";
	@children = map {
		my $n = $_;
		in_child(sub {
			open my $out, '>', "$outcomes.$n" or die $!;
			$out->autoflush(1);
			while (!-e $stop)
			{
				my ($got, $err) = ('', '');
				IPC::Run::run([ 'psql', '-XAtq', '-d', $tax->connstr('postgres'), '-c', $o{ask} ], '>', \$got, '2>', \$err);
				chomp $got;
				printf $out "%.3f %s\n", time, $got eq $o{expect} ? 'ok' : 'error';
				usleep(20_000) if $got ne $o{expect};
			}
			close $out;
		})
	} 1 .. 3;
	push @children, in_child(sub {
		for (my $i = 1; !-e $stop; $i++)
		{
			my ($got, $err) = ('', '');
			IPC::Run::run([ 'psql', '-XAtq', '-d', $o{writer}, '-c',
				"UPDATE person SET version = version + 1 WHERE id = 'P" . (1 + $i % 2000) . "'" ], '>', \$got, '2>', \$err);
			last if $?;
			usleep(20_000);
		}
	});
	my $since = $tax->safe_psql('postgres', 'SELECT coalesce(max(id), 0) FROM interop.message_log');
	sleep(3);
	my $first_async = $tax->safe_psql('postgres',
		qq{SELECT min(interop.query_async('$o{provider}', 'person', jsonb_build_object('id', 'P' || i)))
		   FROM generate_series(1, 20) i});
	my $acted = time;
	$o{act}->();
	my $took = time - $acted;
	sleep(5);
	spew($stop, '');
	stop_child($_) for @children;
	@children = ();

	# the old primary's gateway may still answer for a moment after it
	# died, with records the standby confirmed: the outage is the longest
	# time without an answer from a second before the failover on
	my @lines = sort { $a->[0] <=> $b->[0] } map { [ split / / ] } map { split /\n/, slurp("$outcomes.$_") } 1 .. 3;
	my @ok = map { $_->[0] } grep { $_->[1] eq 'ok' && $_->[0] > $acted - 1 } @lines;
	my $outage = 0;
	for (1 .. $#ok) { $outage = $ok[$_] - $ok[$_ - 1] if $ok[$_] - $ok[$_ - 1] > $outage }
	ok(@ok && $ok[-1] > $acted + $took, "$name: the consumer went on through the other URL");
	my @received = split / /, $tax->safe_psql('postgres',
		qq{SELECT coalesce(string_agg(jti::text, ' '), '') FROM interop.message_log
		   WHERE id > $since AND direction = 'out' AND status = 200 AND service = 'person'});
	return {
		outage => $outage, failover => $took,
		answered => scalar(grep { $_->[1] eq 'ok' } @lines),
		failed => scalar(grep { $_->[1] eq 'error' } @lines),
		received => \@received, first_async => $first_async };
}

# check_after(%opt): after the failover.  opt: consumer, sql (the new
# primary: a closure running SQL), name, load (under_load's result),
# strict (every answer must be in the new primary's log; else the missing
# ones are counted and printed).  Also: the asynchronous requests, the
# subscription, both logs.  Returns how many answers are missing.
sub check_after
{
	my (%o) = @_;
	my ($tax, $new, $name, $load) = ($o{consumer}, $o{sql}, $o{name}, $o{load});

	my %logged = map { $_ => 1 } split / /,
	  $new->(q{SELECT string_agg(jti::text, ' ') FROM interop.message_log WHERE direction = 'in' AND status = 200});
	my $missing = grep { !$logged{$_} } @{ $load->{received} };
	my $received = scalar(@{ $load->{received} });
	is($missing, 0, "$name: every answer the consumer received ($received) is in the new primary's log") if $o{strict};

	my $first = $load->{first_async};
	ok($tax->poll_query_until('postgres',
		qq{SELECT count(*) FILTER (WHERE state = 'done') = 20 FROM interop.async_request WHERE id >= $first}),
		"$name: every asynchronous request is done");
	is($tax->safe_psql('postgres', qq{SELECT count(*) FROM interop.async_request WHERE id >= $first AND row_count = 1}),
		'20', "$name: each has its one result row")
	  or diag($tax->safe_psql('postgres', "SELECT id, state, attempts, last_error FROM interop.async_request WHERE id >= $first"));
	my $jtis = $tax->safe_psql('postgres',
		qq{SELECT string_agg(quote_literal(jti::text), ',') FROM interop.async_request WHERE id >= $first});
	my ($once, $more) = split /\|/, $new->(
		qq{SELECT count(*) FILTER (WHERE n = 1), count(*) FILTER (WHERE n > 1) FROM (SELECT jti, count(*) AS n
		   FROM interop.message_log WHERE direction = 'in' AND jti::text IN ($jtis) AND status = 200 AND replay_of IS NULL
		   GROUP BY jti) x});
	is($more, '0', "$name: none ran twice at the provider");
	is($once, '20', "$name: each ran once at the provider (one first answer per jti in its log)") if $o{strict};

	# a few more changes on the new primary, for the subscription to follow
	$new->(q{UPDATE person SET version = version + 100 WHERE id IN ('P1', 'P2', 'P3')});
	my $rows = q{SELECT md5(string_agg(id || ':' || name || ':' || version, ',' ORDER BY id)) FROM %s};
	my $source = $new->(sprintf($rows, 'person'));
	my $copy;
	for (1 .. 600)
	{
		$copy = $tax->safe_psql('postgres', sprintf($rows, 'person_copy'));
		last if $copy eq $source;
		usleep(100_000);
	}
	is($copy, $source, "$name: the subscription equals the source on the new primary");
	is($tax->safe_psql('postgres', q{SELECT coalesce(last_error, '') FROM interop.stat_subscription}), '',
		"$name: and reports no error");
	is($new->('SELECT interop.seal_log() >= 0'), 't', "$name: the new primary seals");
	is($new->('SELECT count(*) FROM interop.verify_log()'), '0', "$name: verify_log() is clean on the new primary");
	is($tax->safe_psql('postgres', 'SELECT interop.seal_log() >= 0'), 't', "$name: the consumer seals");
	is($tax->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0', "$name: and on the consumer");

	diag(sprintf('%s: consumer-visible outage %.1f s (the failover itself took %.1f s); %d calls answered, %d failed; '
		  . '%d of %d answers missing from the new primary\'s log; %d of 20 asynchronous answers missing there',
		$name, $load->{outage}, $load->{failover}, $load->{answered}, $load->{failed}, $missing, $received, 20 - $once));
	return $missing;
}

1;
