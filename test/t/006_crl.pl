# 006_crl.pl: CRLs fetched from the distribution points that certificates
# name.  The issuing CA's certificates name an http:// distribution point,
# served here by a small HTTP server.  Proves:
#  - the sync worker finds the distribution point in the node's chain,
#    fetches the CRL (DER), checks that its issuer (the intermediate CA of
#    the node's chain) chains to the trust anchor, and installs it;
#  - when the CA revokes a member's certificate and publishes a new CRL,
#    the provider installs it within sync_interval and its gateway refuses
#    that member;
#  - a distribution point that answers garbage is marked and backed off,
#    and the installed CRL stays.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use InteropTest;

my $dir = PostgreSQL::Test::Utils::tempdir();
my $http_port = PostgreSQL::Test::Cluster::get_free_port();
my $url = "http://127.0.0.1:$http_port/issuing.crl";
my $ca;
{
	local $ENV{TESTCA_CDP} = $url;
	$ca = federation_ca($dir);
}
mkdir "$dir/www";

# publish_crl(): the issuing CA's current CRL, DER, where the URL points
sub publish_crl
{
	sh("$TESTCA crl $ca issuing $dir/issuing.crl.pem");
	sh("openssl crl -in $dir/issuing.crl.pem -outform DER -out $dir/www/issuing.crl.tmp");
	rename "$dir/www/issuing.crl.tmp", "$dir/www/issuing.crl" or die $!;
}
publish_crl();

# a tiny HTTP/1.0 server for $dir/www, in a child process
my $pid = serve_files($http_port, "$dir/www", 'application/pkix-crl');
END { stop_child($pid) }

my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $pop = new_node('population', $POP, $ca, 'interop.sync_interval' => "'1s'");
my $tax = new_node('tax', $TAX, $ca, 'interop.gateway_workers' => 0);
$pop->safe_psql('postgres', qq{
	CREATE TABLE person (id text PRIMARY KEY, name text);
	INSERT INTO person VALUES ('P1', 'Person 1');
	SELECT interop.publish('person', 'person', filter_columns => '{id}');
	SELECT interop.grant_access('person', '$TAX');});
$tax->safe_psql('postgres', "SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}')");
ok(wait_for_gateway($pop, "$ca/fedroot/ca.crt", $tax), 'the provider gateway is up');
like(slurp($tax->{interop_chain}), qr/BEGIN CERTIFICATE/, 'the tax office has a certificate');

ok($pop->poll_query_until('postgres', qq{
	SELECT fetched_at IS NOT NULL AND failures = 0 FROM interop.crl_source WHERE url = '$url'}),
	'the sync worker finds the distribution point in the node\'s chain and fetches it');
# the tax office checks the provider's chain against the same list: its own
# sync worker finds the point in its own chain (same issuing CA)
ok($tax->poll_query_until('postgres', qq{
	SELECT fetched_at IS NOT NULL AND failures = 0 FROM interop.crl_source WHERE url = '$url'}),
	'so does the tax office\'s, in its own chain');
is($pop->safe_psql('postgres', q{SELECT count(*) FROM interop.crl WHERE issuer = '/CN=issuing'}), '1',
	'the CRL (DER), signed by the issuing CA of the node\'s chain, which chains to the root anchor, is installed');
is($tax->safe_psql('postgres', qq{SELECT q->>'name' FROM interop.query('$POP', 'person', '{"id":"P1"}') q}),
	'Person 1', 'the tax office is served');

my $before = $pop->safe_psql('postgres', q{SELECT this_update FROM interop.crl WHERE issuer = '/CN=issuing'});
sleep(1);    # a CRL's thisUpdate has a resolution of one second
sh("$TESTCA revoke $ca issuing $ca/tax.crt");
publish_crl();
ok($pop->poll_query_until('postgres', qq{
	SELECT this_update > '$before' FROM interop.crl WHERE issuer = '/CN=issuing'}),
	'a new CRL at the distribution point is installed within sync_interval');
my $refused = 0;
for (1 .. 50)
{
	my ($ret, $out, $err) = $tax->psql('postgres', qq{SELECT * FROM interop.query('$POP', 'person', '{"id":"P1"}')});
	if ($ret != 0) { $refused = 1; last }
	sleep(0.1);
}
ok($refused, 'and the gateway refuses the revoked member');

spew("$dir/www/issuing.crl", 'garbage');
ok($pop->poll_query_until('postgres', qq{
	SELECT failures >= 1 AND last_error LIKE '%did not answer with a CRL%' FROM interop.crl_source WHERE url = '$url'}),
	'a distribution point that answers garbage is marked as failing');
is($pop->safe_psql('postgres', qq{SELECT this_update > '$before' FROM interop.crl WHERE issuer = '/CN=issuing'}), 't',
	'and the installed CRL stays');

done_testing();
