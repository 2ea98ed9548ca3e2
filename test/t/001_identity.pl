# 001_identity.pl: two nodes with their own keys and certificates from one
# federation CA.  Proves that
#  - a node's signature verifies on another node that trusts the CA, and with
#    the openssl command line (the wire format needs no PostgreSQL);
#  - a node that does not trust the CA refuses it (IX002);
#  - trust changes reach sessions that already cached a signer: a CRL or a
#    removed anchor takes effect in another backend's next transaction;
#  - pg_dump keeps the identity and trust tables;
#  - the key file is 0600 and outside any SQL result.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Basename qw(dirname);
use Cwd qw(abs_path);

my $top    = abs_path(dirname(__FILE__) . '/../..');
my $testca = "$top/test/certs/testca";
my $jws    = "$top/test/certs/jws";
my $ca     = PostgreSQL::Test::Utils::tempdir();

sub sh { my $cmd = shift; my $out = `$cmd`; die "failed: $cmd" if $?; return $out }
sub slurp { my $f = shift; open my $h, '<', $f or die "$f: $!"; local $/; <$h> }

sh("$testca root $ca fedroot && $testca sub $ca issuing fedroot && $testca root $ca other");

my %node;
for my $name (qw(population tax))
{
	my $n = PostgreSQL::Test::Cluster->new($name);
	$n->init;
	$n->append_conf('postgresql.conf', "shared_preload_libraries = 'interop'\ninterop.gateway_workers = 0");
	$n->start;
	$n->safe_psql('postgres', 'CREATE EXTENSION interop');
	$node{$name} = $n;
}

# identities: each node makes its key and CSR; the CA issues; the node installs
my %member = (population => 'MN/GOV/1000001/population', tax => 'MN/GOV/1000002/tax');
my $root = slurp("$ca/fedroot/ca.crt");
for my $name (keys %node)
{
	my $n = $node{$name};
	$n->safe_psql('postgres', "SELECT interop.init_node('$member{$name}')");
	my $csr = $n->safe_psql('postgres', 'SELECT interop.certificate_request()');
	open my $f, '>', "$ca/$name.csr" or die; print $f "$csr\n"; close $f;
	sh("$testca sign $ca issuing $ca/$name.csr $ca/$name.crt");
	my $chain = sh("$testca chain $ca issuing $ca/$name.crt");
	$n->safe_psql('postgres', "SELECT interop.add_trust_anchor(\$\$$root\$\$)");
	$n->safe_psql('postgres', "SELECT interop.install_certificate(\$\$$chain\$\$)");
}

my $signed = $node{population}->safe_psql('postgres',
	q{SELECT interop.sign('{"person":"УБ12345678","born":"1980-01-01"}')});
like($signed, qr/^[\w-]+\.[\w-]+\.[\w-]+$/, 'population registry signs a message');

is($node{tax}->safe_psql('postgres', "SELECT interop.verify('$signed')->>'person'"),
	'УБ12345678', 'tax office verifies the population registry signature');

is(sh("$jws verify '$signed' $ca/fedroot/ca.crt"), qq({"born": "1980-01-01", "person": "УБ12345678"}\n),
	'openssl alone verifies the chain and the signature');

# a node of another federation does not trust it
my $stranger = PostgreSQL::Test::Cluster->new('stranger');
$stranger->init;
$stranger->start;
$stranger->safe_psql('postgres', 'CREATE EXTENSION interop');
my $other = slurp("$ca/other/ca.crt");
$stranger->safe_psql('postgres', "SELECT interop.add_trust_anchor(\$\$$other\$\$)");
my ($ret, $out, $err) = $stranger->psql('postgres', "SELECT interop.verify('$signed')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/IX002: certificate is not trusted/, 'a node of another federation refuses the signature (IX002)');

# trust changes reach a session that cached the signer
my $tax = $node{tax};
$tax->safe_psql('postgres', q{
	CREATE FUNCTION try_verify(j text) RETURNS text LANGUAGE plpgsql AS $$
	BEGIN
		RETURN interop.verify(j::interop.jws)->>'born';
	EXCEPTION WHEN others THEN
		RETURN SQLSTATE || ': ' || SQLERRM;
	END $$});
my $session = $tax->background_psql('postgres');
is($session->query_safe("SELECT try_verify('$signed')"), '1980-01-01',
	'a long-lived session verifies and caches the signer');
my $issuing = slurp("$ca/issuing/ca.crt");
$tax->safe_psql('postgres', "SELECT interop.add_trust_anchor(\$\$$issuing\$\$)");
sh("$testca revoke $ca issuing $ca/population.crt && $testca crl $ca issuing $ca/issuing.crl");
my $crl = slurp("$ca/issuing.crl");
$tax->safe_psql('postgres', "SELECT interop.add_crl(\$\$$crl\$\$)");
is($session->query_safe("SELECT try_verify('$signed')"), 'IX004: certificate has been revoked',
	'a CRL installed in another session revokes the cached signer at once');
$session->quit;

# pg_dump keeps identity and trust; the key file stays where it is
my $dump = $node{population}->safe_psql('postgres', 'SELECT 1') && `pg_dump -h @{[$node{population}->host]} -p @{[$node{population}->port]} -d postgres`;
like($dump, qr/COPY interop\.node/, 'pg_dump keeps interop.node');
like($dump, qr/COPY interop\.trust_anchor/, 'pg_dump keeps interop.trust_anchor');
unlike($dump, qr/PRIVATE KEY/, 'pg_dump output holds no private key');

my $keyfile = $node{population}->data_dir . '/interop/node.key';
ok(-f $keyfile, 'the key file is in the data directory');
is(sprintf('%o', (stat $keyfile)[2] & 07777), '600', 'the key file has mode 0600');

$_->stop for (values %node, $stranger);
done_testing();
