# 020_failover.pl: a provider fails over under load and nothing is lost.
# A primary with a synchronous standby and interop.require_synchronous_log
# on; a consumer that knows both nodes' base URLs runs interop.query() in a
# loop, queues asynchronous queries and pulls a subscription while the
# provider's table changes.  The primary's postmaster is killed (kill -9)
# and the standby promoted.  Then:
#  - the consumer goes on through the second URL;
#  - every answer the consumer received is in the new primary's log (the
#    jti sets are compared): none is missing;
#  - every asynchronous request has one result and ran once at the provider;
#  - the subscription equals the source;
#  - verify_log() is clean on both sides.
# Then the same with asynchronous replication and the setting off: the test
# measures and prints how many answers the consumer received are missing
# from the new primary's log (the documented risk).  It prints the outage
# the consumer saw each time.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use InteropTest;
use FailoverLoad;

my $ca  = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $dir = PostgreSQL::Test::Utils::tempdir();
my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $root = "$ca/fedroot/ca.crt";
my $pop = new_node('population', $POP, $ca, allows_streaming => 1, 'interop.seal_interval' => 0);
my $tax = new_node('tax', $TAX, $ca, 'interop.gateway_workers' => 0, 'interop.seal_interval' => 0);

$pop->safe_psql('postgres', qq{
	CREATE TABLE person (id text PRIMARY KEY, name text NOT NULL, version int NOT NULL DEFAULT 0);
	INSERT INTO person SELECT 'P' || i, 'name ' || i FROM generate_series(1, 2000) i;
	SELECT interop.publish('person', 'person', filter_columns => '{id}', track_changes => true, max_rows => 500);
	SELECT interop.grant_access('person', '$TAX');});
my $standby = new_standby($pop, 'standby');
# once promoted it runs alone: no synchronous standby of its own
$standby->append_conf('postgresql.conf', "synchronous_standby_names = ''\ninterop.require_synchronous_log = off\n");
$standby->reload;
$pop->append_conf('postgresql.conf', "synchronous_standby_names = 'standby'\ninterop.require_synchronous_log = on\n");
$pop->reload;
ok($pop->poll_query_until('postgres', q{SELECT sync_state = 'sync' FROM pg_stat_replication WHERE application_name = 'standby'}),
	'the standby streams synchronously');
ok(wait_for_gateway($pop, $root, $tax), 'the primary serves');

$tax->safe_psql('postgres', qq{
	SELECT interop.add_peer('$POP', ARRAY['@{[gateway_url($pop)]}', '@{[gateway_url($standby)]}']);
	CREATE TABLE person_copy (id text PRIMARY KEY, name text NOT NULL, version int NOT NULL);
	SELECT interop.subscribe('$POP', 'person', 'person_copy'::regclass, NULL, interval '1 second');});
ok($tax->poll_query_until('postgres', q{SELECT phase = 'sync' FROM interop.stat_subscription}),
	'the subscription has copied the table');

my $ask = qq{SELECT q->>'name' FROM interop.query('$POP', 'person', '{"id":"P7"}') q};
my %load = (consumer => $tax, provider => $POP, ask => $ask, expect => 'name 7', dir => $dir);

# ---- synchronous replication, interop.require_synchronous_log = on

my $r = under_load(%load, name => 'synchronous', writer => $pop->connstr('postgres'),
	act => sub {
		$pop->kill9;
		$standby->promote;
		ok(wait_for_gateway($standby, $root, $tax), 'synchronous: the standby, promoted, serves');
	});
check_after(consumer => $tax, sql => sub { $standby->safe_psql('postgres', $_[0]) }, name => 'synchronous',
	load => $r, strict => 1);

# ---- asynchronous replication, interop.require_synchronous_log = off:
# the documented risk, measured

my $second = new_standby($standby, 'second');
$standby->wait_for_catchup('second');
$tax->safe_psql('postgres',
	qq{SELECT interop.add_peer('$POP', ARRAY['@{[gateway_url($standby)]}', '@{[gateway_url($second)]}'])});
$r = under_load(%load, name => 'asynchronous', writer => $standby->connstr('postgres'),
	act => sub {
		$standby->kill9;
		$second->promote;
		ok(wait_for_gateway($second, $root, $tax), 'asynchronous: the second standby, promoted, serves');
	});
ok(@{ $r->{received} } > 0, 'asynchronous: the consumer was answered (' . scalar(@{ $r->{received} }) . ' answers)');
check_after(consumer => $tax, sql => sub { $second->safe_psql('postgres', $_[0]) }, name => 'asynchronous',
	load => $r, strict => 0);

done_testing();
