# 023_rotation.pl: a key rotation without an outage.  Proves that
#  - rotate_key() makes a pending key and its certificate request, and the
#    node goes on signing with its current key and certificate meanwhile:
#    consumers are served throughout, nothing is signed without x5c;
#  - install_certificate() of the new key's certificate makes it the
#    node's key (the pending file becomes the key file); the old public key
#    stays in interop.node_key, so seals made before verify;
#  - a rolled-back activation leaves the key pending; a certificate for
#    neither key is refused; a certificate that runs out sooner than the
#    current one gets a warning, one within interop.min_certificate_lifetime
#    is refused.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use InteropTest;

my $ca  = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $root = "$ca/fedroot/ca.crt";
my $pop = new_node('population', $POP, $ca, 'interop.gateway_workers' => 1, 'interop.seal_interval' => 0);
my $tax = new_node('tax', $TAX, $ca, 'interop.gateway_workers' => 0);
$pop->safe_psql('postgres', qq{
	CREATE TABLE person (id text PRIMARY KEY, name text);
	INSERT INTO person VALUES ('P1', 'Ann');
	SELECT interop.publish('person', 'person', filter_columns => '{id}');
	SELECT interop.grant_access('person', '$TAX');});
$tax->safe_psql('postgres', "SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}')");
ok(wait_for_gateway($pop, $root, $tax), 'the provider serves');
my $ask = qq{SELECT q->>'name' FROM interop.query('$POP', 'person', '{"id":"P1"}') q};
is($tax->safe_psql('postgres', $ask), 'Ann', 'an exchange with the first key');
my $key_file = node_key_file($pop);
my $first_key = slurp($key_file);
my $first_pub = $pop->safe_psql('postgres', 'SELECT public_key FROM interop.node');
ok($pop->safe_psql('postgres', 'SELECT interop.seal_log()') > 0, 'a seal by the first key');

# ---- the pending key
my $csr = $pop->safe_psql('postgres', 'SELECT interop.rotate_key()');
like($csr, qr/BEGIN CERTIFICATE REQUEST/, 'rotate_key() returns a certificate request');
ok(-f "$key_file.pending", 'the new key waits in a file of its own');
is(slurp($key_file), $first_key, 'the key file is untouched');
is($pop->safe_psql('postgres', 'SELECT public_key = pending_public_key, pending_alg FROM interop.node'), 'f|ES256',
	'interop.node records the pending public key');
is($tax->safe_psql('postgres', $ask), 'Ann', 'consumers are served meanwhile');
like($pop->safe_psql('postgres', q{SELECT interop.jws_header(interop.sign('{"a": 1}'))->>'x5c' IS NOT NULL}), qr/^t$/,
	'and what the node signs still carries its certificate (x5c)');
is($pop->safe_psql('postgres', q{SELECT interop.verify(interop.sign('{"a": 1}'))->>'a'}), '1',
	'signed by the current key, which verifies');

# a certificate for neither key
spew("$ca/other.csr", $tax->safe_psql('postgres', 'SELECT interop.certificate_request()') . "\n");
sh("$TESTCA signas $ca issuing $ca/other.csr $ca/other.crt '$POP'");
my ($rc, $out, $err) = $pop->psql('postgres',
	"SELECT interop.install_certificate(\$\$@{[sh(\"$TESTCA chain $ca issuing $ca/other.crt\")]}\$\$)");
like($err, qr/ERROR:  certificate does not match the node key\nDETAIL:  .*than the node's and than the pending key's/,
	'a certificate for neither key is refused');

# the new key's certificate, valid for less time than the current one
spew("$ca/rotated.csr", "$csr\n");
my $end = $pop->safe_psql('postgres', q{SELECT to_char(certificate_not_after - interval '10 days', 'YYYYMMDDHH24MISS"Z"') FROM interop.node});
my $start = $pop->safe_psql('postgres', q{SELECT to_char(now() - interval '1 hour', 'YYYYMMDDHH24MISS"Z"')});
sh("$TESTCA sign $ca issuing $ca/rotated.csr $ca/rotated.crt $start $end");
my $chain = sh("$TESTCA chain $ca issuing $ca/rotated.crt");

# interop.min_certificate_lifetime refuses it
set_setting($pop, 'interop.min_certificate_lifetime', '400d');
($rc, $out, $err) = $pop->psql('postgres', "SELECT interop.install_certificate(\$\$$chain\$\$)");
like($err, qr/ERROR:  the certificate expires within interop.min_certificate_lifetime/, 'interop.min_certificate_lifetime refuses a short one');
set_setting($pop, 'interop.min_certificate_lifetime', '0');

# rolled back: still pending
$pop->safe_psql('postgres', "BEGIN; SELECT interop.install_certificate(\$\$$chain\$\$); ROLLBACK;");
ok(-f "$key_file.pending" && slurp($key_file) eq $first_key, 'a rolled-back activation leaves the key pending');
is($tax->safe_psql('postgres', $ask), 'Ann', '(and the node serves with its first key)');

# ---- activation
($rc, $out, $err) = $pop->psql('postgres', "SELECT interop.install_certificate(\$\$$chain\$\$)");
is($rc, 0, 'install_certificate() of the new key\'s certificate activates it');
like($err, qr/WARNING:  the new certificate expires before the one it replaces/, 'with a warning: it runs out sooner');
ok(!-e "$key_file.pending" && slurp($key_file) ne $first_key, 'the pending key is the key file now');
is($pop->safe_psql('postgres', 'SELECT pending_public_key IS NULL AND public_key <> ' . "\$\$$first_pub\$\$" . ' FROM interop.node'), 't',
	'interop.node has the new public key, nothing pending');
is($pop->safe_psql('postgres', "SELECT count(*) FROM interop.node_key WHERE public_key = \$\$$first_pub\$\$"), '1',
	'the old public key stays in interop.node_key');
ok(wait_for_gateway($pop, $root, $tax), 'the gateway serves with the new key');
is($tax->safe_psql('postgres', $ask), 'Ann', 'consumers are served by the new key');
ok($pop->safe_psql('postgres', 'SELECT interop.seal_log()') > 0, 'a seal by the new key');
is($pop->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0',
	'verify_log() is clean: seals of both keys verify');

done_testing();
