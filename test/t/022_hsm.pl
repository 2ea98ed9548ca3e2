# 022_hsm.pl: the node key in a PKCS#11 token (SoftHSM2), through
# OpenSSL's pkcs11 engine.  Proves that
#  - init_node() takes the token's key (imported into it; the key file it
#    came from is gone) and no key file is written;
#  - certificate requests, sign()/verify(), seals, and TLS both ways (the
#    node as provider and as consumer) work with the key in the token;
#  - a wrong PIN, a PIN file others can read, a PIN file inside the data
#    directory, a token that is not there, and init_node(overwrite) each
#    get a clear error.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use InteropTest;

my ($module) = grep { -f } ('/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so');
plan skip_all => 'SoftHSM2 or the pkcs11 engine is not installed (softhsm2, libengine-pkcs11-openssl)'
  unless $module && system('openssl engine pkcs11 >/dev/null 2>&1') == 0;

my $ca  = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $dir = PostgreSQL::Test::Utils::tempdir();
my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $root = "$ca/fedroot/ca.crt";

# a token, and a key imported into it; the PEM it came from is removed
mkdir "$dir/tokens";
spew("$dir/softhsm2.conf", "directories.tokendir = $dir/tokens\nobjectstore.backend = file\nlog.level = ERROR\n");
$ENV{SOFTHSM2_CONF} = "$dir/softhsm2.conf";    # the servers started below inherit it
sh("softhsm2-util --init-token --free --label interop --pin 4711 --so-pin 123456 >/dev/null");
sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $dir/k.pem 2>/dev/null");
sh("openssl pkcs8 -topk8 -nocrypt -in $dir/k.pem -out $dir/k8.pem");
my $public = sh("openssl pkey -in $dir/k.pem -pubout");
sh("softhsm2-util --import $dir/k8.pem --token interop --label node --id 01 --pin 4711 >/dev/null");
unlink "$dir/k.pem", "$dir/k8.pem";
spew("$dir/pin", "4711\n");
chmod 0600, "$dir/pin";
my $uri = 'pkcs11:token=interop;object=node;type=private';

my $pop = PostgreSQL::Test::Cluster->new('population');
$pop->init;
$pop->{interop_port} = PostgreSQL::Test::Cluster::get_free_port();
$pop->append_conf('postgresql.conf', <<"CONF");
shared_preload_libraries = 'interop'
interop.port = $pop->{interop_port}
interop.listen_addresses = '127.0.0.1'
interop.gateway_workers = 1
interop.key_file = '$uri'
interop.pkcs11_module = '$module'
interop.pkcs11_pin_file = '$dir/pin'
CONF
$pop->start;
$pop->safe_psql('postgres', 'CREATE EXTENSION interop');
my $took = $pop->safe_psql('postgres', "SELECT interop.init_node('$POP')");
is($took =~ s/\s+$//r, $public =~ s/\s+$//r, 'init_node() takes the key in the token: its public key is the imported one');
ok(!-e $pop->data_dir . '/interop/node.key', 'and writes no key file');
spew("$ca/population.csr", $pop->safe_psql('postgres', 'SELECT interop.certificate_request()') . "\n");
sh("$TESTCA sign $ca issuing $ca/population.csr $ca/population.crt");
my $chain = sh("$TESTCA chain $ca issuing $ca/population.crt");
spew("$ca/population.chain", $chain);
$pop->{interop_chain} = "$ca/population.chain";
$pop->safe_psql('postgres', "SELECT interop.add_trust_anchor(\$\$@{[slurp($root)]}\$\$)");
$pop->safe_psql('postgres', "SELECT interop.install_certificate(\$\$$chain\$\$)");
is($pop->safe_psql('postgres', 'SELECT certificate_not_after IS NOT NULL FROM interop.node'), 't',
	'the CA certifies the token key (the request was signed in the token)');
is($pop->safe_psql('postgres', q{SELECT interop.verify(interop.sign('{"a": 1}'))->>'a'}), '1',
	'sign() signs in the token, verify() checks it');

# exchanges both ways: TLS with the token key as server and as client
my $tax = new_node('tax', $TAX, $ca, 'interop.gateway_workers' => 1);
$pop->safe_psql('postgres', qq{
	CREATE TABLE person (id text PRIMARY KEY, name text);
	INSERT INTO person VALUES ('P1', 'Ann');
	SELECT interop.publish('person', 'person', filter_columns => '{id}');
	SELECT interop.grant_access('person', '$TAX');
	SELECT interop.add_peer('$TAX', '@{[gateway_url($tax)]}');});
$tax->safe_psql('postgres', qq{
	CREATE TABLE debt (id text PRIMARY KEY, amount int);
	INSERT INTO debt VALUES ('P1', 42);
	SELECT interop.publish('debt', 'debt', filter_columns => '{id}');
	SELECT interop.grant_access('debt', '$POP');
	SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}');});
ok(wait_for_gateway($pop, $root, $tax), 'the gateway serves TLS with the token key');
is($tax->safe_psql('postgres', qq{SELECT q->>'name' FROM interop.query('$POP', 'person', '{"id":"P1"}') q}), 'Ann',
	'a consumer is served: the answer signed in the token verifies');
ok(wait_for_gateway($tax, $root, $tax), '(the other node serves too)');
is($pop->safe_psql('postgres', qq{SELECT q->>'amount' FROM interop.query('$TAX', 'debt', '{"id":"P1"}') q}), '42',
	'as a consumer, the node presents its token key in TLS and signs the request in the token');
ok($pop->safe_psql('postgres', 'SELECT interop.seal_log()') > 0, 'seals are signed in the token');
is($pop->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0', 'and verify');

# ---- what goes wrong gets a clear error

sub sign_error
{
	my ($rc, $out, $err) = $pop->psql('postgres', q{SELECT interop.sign('{"a": 1}')});
	return $err;
}


spew("$dir/pin", "1111\n");
like(sign_error(), qr/ERROR:  could not load the node key from the PKCS#11 token: "\Q$uri\E"\nDETAIL:  OpenSSL's pkcs11 engine: [^\n]*PIN[^\n]*\nHINT:  Check that the token is present/s,
	'a wrong PIN: the key cannot be loaded, the detail says the PIN, the hint what to check');
spew("$dir/pin", "4711\n");
chmod 0644, "$dir/pin";
like(sign_error(), qr/ERROR:  the PIN file ".*" can be read by others\n.*HINT:  chown it to the server's user and chmod 0600 it/s,
	'a PIN file others can read is refused');
chmod 0600, "$dir/pin";
spew($pop->data_dir . '/pin', "4711\n");
chmod 0600, $pop->data_dir . '/pin';
set_setting($pop, 'interop.pkcs11_pin_file', $pop->data_dir . '/pin');
like(sign_error(), qr/ERROR:  the PIN file ".*" is inside the data directory/, 'so is a PIN file inside the data directory');
set_setting($pop, 'interop.pkcs11_pin_file', "$dir/pin");
set_setting($pop, 'interop.key_file', 'pkcs11:token=absent;object=node;type=private');
like(sign_error(), qr/ERROR:  could not load the node key from the PKCS#11 token: "pkcs11:token=absent;object=node;type=private"/,
	'a token that is not there');
set_setting($pop, 'interop.key_file', $uri);
is($pop->safe_psql('postgres', q{SELECT interop.verify(interop.sign('{"a": 2}'))->>'a'}), '2', 'fixed, it signs again');
my ($rc, $out, $err) = $pop->psql('postgres', "SELECT interop.init_node('$POP', overwrite => true)");
like($err, qr/ERROR:  the node key is in a PKCS#11 token: interop.init_node\(\) does not replace it\n.*HINT:  Generate or import a new key in the token/s,
	'init_node(overwrite) does not pretend to replace a token key');

done_testing();
