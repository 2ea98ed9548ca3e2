# 016_workers.pl: the workers come back by themselves.  Proves that
#  - with interop.database missing, each worker fails to connect once (the
#    server's own FATAL), then waits quietly: one LOG line says why, and no
#    FATAL follows while it waits;
#  - they connect within seconds of CREATE DATABASE;
#  - DROP DATABASE ... WITH (FORCE) and pg_terminate_backend() stop them,
#    and they start again (before 0.2.0 the gateway and the log writer
#    exited with 0 and stayed away until the server restarted);
#  - at a shutdown they leave with exit code 0.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use InteropTest;

my $node = PostgreSQL::Test::Cluster->new('registry');
$node->init;
my $port = PostgreSQL::Test::Cluster::get_free_port();
$node->append_conf('postgresql.conf', <<"CONF");
shared_preload_libraries = 'interop'
interop.database = 'registry'
interop.gateway_workers = 1
interop.port = $port
CONF
$node->start;
my $log = $node->logfile;

# the workers of interop, and the database each is connected to
sub workers
{
	return $node->safe_psql('postgres',
		q{SELECT string_agg(backend_type || '=' || coalesce(datname, '-'), ' ' ORDER BY backend_type)
		  FROM pg_stat_activity WHERE backend_type LIKE 'interop%'});
}

sub wait_for_workers
{
	my ($want) = @_;
	my $got = '';
	for (1 .. 200)
	{
		$got = workers();
		return $got if $got eq $want;
		usleep(100_000);
	}
	return $got;
}

sub count_in_log
{
	my ($re) = @_;
	my @lines = grep { /$re/ } split /\n/, slurp($log);
	return scalar @lines;
}

my $connected = 'interop gateway=registry interop log writer=registry interop sync=registry';
my $waiting   = 'interop gateway=- interop log writer=- interop sync=-';

# ---- interop.database missing ----
is(wait_for_workers($waiting), $waiting, 'with interop.database missing, the workers wait connected to no database');
my $fatal = count_in_log(qr/FATAL:  database "registry" does not exist/);
ok($fatal >= 1 && $fatal <= 3, "each worker failed to connect at most once ($fatal FATAL lines)");
sleep 6;
is(count_in_log(qr/FATAL:  database "registry" does not exist/), $fatal, 'no more FATAL lines while they wait (6 s)');
is(count_in_log(qr/interop workers are waiting: database "registry" does not exist/), 1, 'one LOG line says why');
is(count_in_log(qr/exited with exit code 1/), $fatal, '... and nothing restarts meanwhile');

# ---- the database appears ----
$node->safe_psql('postgres', 'CREATE DATABASE registry');
is(wait_for_workers($connected), $connected, 'after CREATE DATABASE, every worker connects to it');

# ---- DROP DATABASE ... WITH (FORCE) ----
$node->safe_psql('postgres', 'DROP DATABASE registry WITH (FORCE)');
is(wait_for_workers($waiting), $waiting, 'after DROP DATABASE ... WITH (FORCE), they wait again instead of staying away');
like(slurp($log), qr/interop gateway 1 was stopped by process \d+ and starts again/, 'the gateway says who stopped it');
like(slurp($log), qr/interop log writer was stopped by process \d+ and starts again/, 'so does the log writer');
$node->safe_psql('postgres', 'CREATE DATABASE registry');
is(wait_for_workers($connected), $connected, 'and they connect again when the database is back');

# ---- pg_terminate_backend ----
my $pid = $node->safe_psql('registry', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'interop gateway'});
$node->safe_psql('registry', "SELECT pg_terminate_backend($pid)");
my $again = '';
for (1 .. 100)
{
	$again = $node->safe_psql('registry', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'interop gateway'});
	last if $again ne '' && $again ne $pid;
	usleep(100_000);
}
isnt($again, $pid, 'a gateway ended with pg_terminate_backend() starts again');
ok($again ne '', '... as a new process');

# ---- a shutdown: exit code 0 ----
my $exits  = count_in_log(qr/"interop (gateway 1|log writer)" \(PID \d+\) exited with exit code 1/);
my $starts = count_in_log(qr/was stopped by process \d+ and starts again/);
$node->stop('fast');
is(count_in_log(qr/"interop (gateway 1|log writer)" \(PID \d+\) exited with exit code 1/), $exits,
	'at a shutdown the gateway and the log writer leave with exit code 0');
is(count_in_log(qr/was stopped by process \d+ and starts again/), $starts, '... and do not say they start again');

done_testing();
