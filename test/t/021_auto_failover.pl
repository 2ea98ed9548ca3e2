# 021_auto_failover.pl: interop under pg_auto_failover.  A monitor and two
# data nodes made by pg_autoctl, interop preloaded on both (the second made
# by pg_autoctl's own base backup, which carries the key file), with
# interop.require_synchronous_log on and the synchronous replication
# pg_auto_failover sets up.  A consumer that knows both nodes works as in
# 020_failover.pl while "pg_autoctl perform failover" swaps the roles; then
# nothing it received is missing from the new primary's log, every
# asynchronous request ran once, the subscription converges, and both logs
# verify.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use InteropTest;
use FailoverLoad;

my $sharedir = `pg_config --sharedir`;
chomp $sharedir;
plan skip_all => 'pg_auto_failover is not installed for this PostgreSQL (postgresql-MAJOR-auto-failover)'
  unless -f "$sharedir/extension/pgautofailover.control" && system('pg_autoctl --version >/dev/null 2>&1') == 0;

my $ca  = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $dir = PostgreSQL::Test::Utils::tempdir();
my $base = PostgreSQL::Test::Utils::tempdir_short();    # sockets live here
$ENV{HOME} = "$base/home";    # pg_autoctl keeps its state under the home directory
mkdir $ENV{HOME};
my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $root = "$ca/fedroot/ca.crt";
my %port = map { $_ => PostgreSQL::Test::Cluster::get_free_port() } qw(monitor n1 n2 gw1 gw2);

sub run_ok
{
	my ($what, @cmd) = @_;
	my ($out, $err) = ('', '');
	local $ENV{PGHOST} = $base;    # pg_autoctl reaches its nodes through their sockets
	return $out if IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
	diag("$what failed: @cmd\n$out$err");
	BAIL_OUT("$what failed");
}

sub sql
{
	my ($node, $q, $db) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-h', $base, '-p', $port{$node}, '-d', $db // 'postgres',
		'-c', $q ], '>', \$out, '2>', \$err) or die "SQL on $node failed: $q\n$err";
	chomp $out;
	return $out;
}

my %keeper;
sub keep    # pg_autoctl run for NODE, in the background
{
	my ($node) = @_;
	local $ENV{PGHOST} = $base;
	$keeper{$node} = IPC::Run::start([ 'pg_autoctl', 'run', '--pgdata', "$base/$node" ],
		'>', "$dir/$node.log", '2>', "$dir/$node.err");
}
END
{
	local $?;
	for my $node (qw(n2 n1 monitor))
	{
		next unless $keeper{$node};
		system("PGHOST=$base pg_autoctl stop --pgdata $base/$node --fast >/dev/null 2>&1");
		eval { $keeper{$node}->finish; };
		system("pg_ctl -D $base/$node -m immediate stop >/dev/null 2>&1");
	}
}

# a data directory made beforehand, so its sockets are ours; settings of
# interop go in a file included after pg_auto_failover's own
sub prepare
{
	my ($node) = @_;
	run_ok('initdb', 'initdb', '-D', "$base/$node", '-A', 'trust', '--no-sync');
	spew("$base/$node/postgresql.conf", slurp("$base/$node/postgresql.conf") . "unix_socket_directories = '$base'\n");
}

sub interop_conf
{
	my ($node, $gw) = @_;
	spew("$base/$node/interop-node.conf", join("\n",
		"shared_preload_libraries = 'pg_stat_statements,interop'",
		"interop.port = $port{$gw}",
		"interop.listen_addresses = '127.0.0.1'",
		"interop.gateway_workers = 2",
		"interop.seal_interval = 0",
		"interop.require_synchronous_log = on") . "\n");
}

sub states
{
	return sql('monitor', q{SELECT string_agg(nodename || ':' || reportedstate, ' ' ORDER BY nodeid) FROM pgautofailover.node},
		'pg_auto_failover');
}

sub wait_states
{
	my ($want) = @_;
	my $got = '';
	for (1 .. 600)
	{
		$got = eval { states() } // '';
		return 1 if $got eq $want;
		usleep(100_000);
	}
	diag("pg_auto_failover states: $got (waited for $want)");
	return 0;
}

my $monitor_uri = "postgres://autoctl_node\@127.0.0.1:$port{monitor}/pg_auto_failover?sslmode=disable";
prepare('monitor');
run_ok('the monitor', 'pg_autoctl', 'create', 'monitor', '--pgdata', "$base/monitor", '--pgport', $port{monitor},
	'--hostname', '127.0.0.1', '--auth', 'trust', '--no-ssl');
keep('monitor');
sleep(1) until eval { sql('monitor', 'SELECT 1', 'pg_auto_failover') };

# the first data node, then its identity, then the second (from its base backup)
prepare('n1');
run_ok('node n1', 'pg_autoctl', 'create', 'postgres', '--pgdata', "$base/n1", '--pgport', $port{n1},
	'--hostname', '127.0.0.1', '--monitor', $monitor_uri, '--auth', 'trust', '--no-ssl', '--name', 'n1');
system("pg_ctl -D $base/n1 -m fast stop >/dev/null 2>&1");
spew("$base/n1/postgresql.conf", slurp("$base/n1/postgresql.conf") . "include_if_exists = 'interop-node.conf'\n");
interop_conf('n1', 'gw1');
keep('n1');
ok(wait_states('n1:single'), 'pg_auto_failover runs the first node');
sleep(1) until eval { sql('n1', 'SELECT 1') };

sql('n1', 'CREATE EXTENSION interop');
sql('n1', "SELECT interop.init_node('$POP')");
spew("$ca/pop.csr", sql('n1', 'SELECT interop.certificate_request()') . "\n");
sh("$TESTCA sign $ca issuing $ca/pop.csr $ca/pop.crt");
my $chain = sh("$TESTCA chain $ca issuing $ca/pop.crt");
sql('n1', "SELECT interop.add_trust_anchor(\$\$@{[slurp($root)]}\$\$)");
sql('n1', "SELECT interop.install_certificate(\$\$$chain\$\$)");
sql('n1', qq{
	CREATE TABLE person (id text PRIMARY KEY, name text NOT NULL, version int NOT NULL DEFAULT 0);
	INSERT INTO person SELECT 'P' || i, 'name ' || i FROM generate_series(1, 2000) i;
	SELECT interop.publish('person', 'person', filter_columns => '{id}', track_changes => true, max_rows => 500);
	SELECT interop.grant_access('person', '$TAX');});

run_ok('node n2', 'pg_autoctl', 'create', 'postgres', '--pgdata', "$base/n2", '--pgport', $port{n2},
	'--hostname', '127.0.0.1', '--monitor', $monitor_uri, '--auth', 'trust', '--no-ssl', '--name', 'n2');
system("pg_ctl -D $base/n2 -m fast stop >/dev/null 2>&1");
interop_conf('n2', 'gw2');
keep('n2');
ok(wait_states('n1:primary n2:secondary'), 'the second node is its synchronous standby');
like(sql('n1', 'SHOW synchronous_standby_names'), qr/pgautofailover_standby/, '(pg_auto_failover set synchronous_standby_names)');
is(sql('n2', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'interop%'}), '0',
	'no worker of interop runs on the secondary');

my $tax = new_node('tax', $TAX, $ca, 'interop.gateway_workers' => 0, 'interop.seal_interval' => 0);
my %gw1 = (interop_port => $port{gw1});
my %gw2 = (interop_port => $port{gw2});
ok(wait_for_gateway(\%gw1, $root, $tax), 'the primary serves');
$tax->safe_psql('postgres', qq{
	SELECT interop.add_peer('$POP', ARRAY['@{[gateway_url(\%gw1)]}', '@{[gateway_url(\%gw2)]}']);
	CREATE TABLE person_copy (id text PRIMARY KEY, name text NOT NULL, version int NOT NULL);
	SELECT interop.subscribe('$POP', 'person', 'person_copy'::regclass, NULL, interval '1 second');});
ok($tax->poll_query_until('postgres', q{SELECT phase = 'sync' FROM interop.stat_subscription}),
	'the subscription has copied the table');

my $r = under_load(consumer => $tax, provider => $POP, dir => $dir, name => 'pg_auto_failover',
	ask => qq{SELECT q->>'name' FROM interop.query('$POP', 'person', '{"id":"P7"}') q}, expect => 'name 7',
	writer => "host=$base port=$port{n1} dbname=postgres",
	act => sub {
		run_ok('pg_autoctl perform failover', 'pg_autoctl', 'perform', 'failover', '--pgdata', "$base/monitor");
		ok(wait_states('n1:secondary n2:primary'), 'pg_autoctl perform failover: n2 is the primary, n1 its standby');
		ok(wait_for_gateway(\%gw2, $root, $tax), 'the new primary serves');
	});
check_after(consumer => $tax, sql => sub { sql('n2', $_[0]) }, name => 'pg_auto_failover', load => $r, strict => 1);
is(sql('n1', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'interop%'}), '0',
	'the old primary, now a standby, runs no worker of interop');
my ($code) = curl_gateway(\%gw1, '/v1/health', as => $tax);
isnt($code, '200', 'and nothing answers on its gateway port');

done_testing();
