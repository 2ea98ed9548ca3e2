# 026_trust_cache.pl: a trust change that commits while a process builds
# its trust store.  The store is read table by table; a change that commits
# in between arrives (as an invalidation) when the next table is locked,
# after the rows before were read with an older snapshot.  Such a store
# must not stay cached: the process would go on trusting (or not) as
# before the change until the next one.  Proves:
#  - a session that starts building its store while a new trust anchor is
#    being added (the lock on interop.crl held until the anchor commits)
#    trusts the new anchor afterwards, in the same statement and the next.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use InteropTest;

my $dir = PostgreSQL::Test::Utils::tempdir();
my $ca = federation_ca($dir);
my $pop = new_node('population', 'MN/GOV/1000001/population', $ca, 'interop.gateway_workers' => 0);

# a member certified by a CA the node does not trust yet
sh("$TESTCA root $dir other");
sh("$TESTCA leaf $dir other 'MN/GOV/3000003/portal' ES256 $dir/portal");
my $jws = sh("JWS_TYP=JOSE $JWS sign ES256 $dir/portal.key $dir/portal.crt '{\"a\":1}'");
chomp $jws;
my $root = slurp("$dir/other/ca.crt");
my $verify = "SELECT 'verified:' || (interop.verify('$jws') IS NOT NULL)";
my ($ok, $out, $err) = $pop->psql('postgres', $verify);
like($err, qr/not trusted|trust anchor/i, 'before: the member is not trusted');

my $adder = $pop->background_psql('postgres');
my $reader = $pop->background_psql('postgres', on_error_stop => 0);
$adder->query_safe('BEGIN');
$adder->query_safe('LOCK TABLE interop.crl IN ACCESS EXCLUSIVE MODE');
$adder->query_safe("SELECT interop.add_trust_anchor(\$\$$root\$\$)");
# the reader reads the anchors (not the new one: uncommitted), then waits for interop.crl
$reader->query_until(qr/started/, "\\echo started\n$verify;\n");
ok($pop->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_locks WHERE relation = 'interop.crl'::regclass AND NOT granted}),
	'the reader waits for interop.crl while building its store');
$adder->query_safe('COMMIT');
my ($second) = $reader->query("$verify");
like($second, qr/verified:true/, 'after the anchor committed, the store the reader built trusts it');
($second) = $reader->query("$verify");
like($second, qr/verified:true/, 'and so does its next statement (no stale store cached)');
$reader->quit;
$adder->quit;

done_testing();
