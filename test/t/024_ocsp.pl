# 024_ocsp.pl: revocation by OCSP alone.  The issuing CA's certificates
# name an OCSP responder and no CRL distribution point; the responder is
# "openssl ocsp" answering from the CA's own index, behind a small HTTP
# server on loopback.  Proves:
#  - the sync worker asks about the node's own certificate and about every
#    peer certificate it has seen, stores only answers that check, and the
#    exchange works once both sides know each other's status;
#  - the gateway staples its answer (seen with openssl s_client -status),
#    and a consumer that has no answer of its own and cannot reach the
#    responder is served on the strength of the staple alone;
#  - an answer older than interop.ocsp_max_age does not count: the peer
#    is refused as of unknown status, naming the responder;
#  - an answer signed by a certificate the CA did not delegate OCSP to is
#    refused and recorded, the stored one stays;
#  - a revoked member is refused by OCSP alone (no CRL anywhere).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use InteropTest;
use Time::HiRes qw(usleep);

my $dir = PostgreSQL::Test::Utils::tempdir();
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $url = "http://127.0.0.1:$port";
my $ca = $dir;
sh("$TESTCA root $ca fedroot");
{
	local $ENV{TESTCA_OCSP} = $url;
	sh("$TESTCA sub $ca issuing fedroot");
}
sh("$TESTCA responder $ca issuing $dir/responder");
# a certificate of the same CA without OCSP signing usage
sh("$TESTCA leaf $ca issuing 'not a responder' ES256 $dir/impostor");

my $responder = serve_ocsp($port, "$ca/issuing", "$dir/responder", 0);
END { stop_child($responder) }

my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my %conf = ('interop.sync_interval' => "'1s'", 'interop.ocsp_max_age' => "'40s'");
my $pop = new_node('population', $POP, $ca, %conf);
my $tax = new_node('tax', $TAX, $ca, %conf, 'interop.gateway_workers' => 0);
like(sh("openssl x509 -in $ca/population.crt -noout -ext authorityInfoAccess,crlDistributionPoints"),
	qr/OCSP - URI:\Q$url\E/, 'the node certificates name the responder, and no distribution point');
$pop->safe_psql('postgres', qq{
	CREATE TABLE person (id text PRIMARY KEY, name text);
	INSERT INTO person VALUES ('P1', 'Person 1');
	SELECT interop.publish('person', 'person', filter_columns => '{id}');
	SELECT interop.grant_access('person', '$TAX');});
$tax->safe_psql('postgres', "SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}')");

ok($pop->poll_query_until('postgres', q{
	SELECT status = 'good' AND response IS NOT NULL FROM interop.ocsp_response WHERE subject LIKE '%population'}),
	'the sync worker asks about the node\'s own certificate and stores the good answer');
my $query = qq{SELECT q->>'name' FROM interop.query('$POP', 'person', '{"id":"P1"}') q};
my ($ok, $out, $err) = (1, '', '');
for (1 .. 300)
{
	($ok, $out, $err) = $tax->psql('postgres', $query);
	last if $ok == 0;
	usleep(100_000);
}
is($out, 'Person 1', 'the tax office is served once the provider knows its status')
  or diag($err);
is($pop->safe_psql('postgres', q{
	SELECT status FROM interop.ocsp_response WHERE subject LIKE '%tax'}), 'good',
	'the provider asked about the consumer certificate its gateway saw');
is($pop->safe_psql('postgres', q{SELECT count(*) FROM interop.crl}), '0', 'no CRL is involved');

my $sclient = `echo | openssl s_client -connect 127.0.0.1:$pop->{interop_port} -status -CAfile $ca/fedroot/ca.crt -cert @{[node_chain_file($tax)]} -key @{[node_key_file($tax)]} 2>&1`;
like($sclient, qr/OCSP Response Status: successful/, 'the gateway staples an OCSP answer (openssl s_client -status)');
like($sclient, qr/Cert Status: good/, 'which says good');

# The consumer forgets its answers and the responder goes away: the
# provider's staple alone stands for the provider's status.
stop_child($responder);
$tax->safe_psql('postgres', 'DELETE FROM interop.ocsp_response');
($ok, $out, $err) = $tax->psql('postgres', $query);
is($out, 'Person 1', 'with no answer of its own and no responder, the consumer is served on the staple')
  or diag($err);

# Once the provider's own answer is older than interop.ocsp_max_age, it
# staples nothing and the consumer refuses it.
my $fetched = $pop->safe_psql('postgres', q{
	SELECT extract(epoch FROM this_update) FROM interop.ocsp_response WHERE subject LIKE '%population'});
sleep(1) while time() < $fetched + 42;
($ok, $out, $err) = $tax->psql('postgres', $query);
isnt($ok, 0, 'a staple older than interop.ocsp_max_age does not count');
like($err, qr/revocation status of the TLS certificate of peer \Q$POP\E is unknown/, 'the refusal says the status is unknown');
like($err, qr/OCSP answer .* stapled none/, 'and that the provider stapled no fresh answer');
$sclient = `echo | openssl s_client -connect 127.0.0.1:$pop->{interop_port} -status -CAfile $ca/fedroot/ca.crt -cert @{[node_chain_file($tax)]} -key @{[node_key_file($tax)]} 2>&1`;
like($sclient, qr/OCSP responses?: no responses? sent/, 'the gateway staples nothing stale');
like($pop->safe_psql('postgres', q{
	SELECT last_error FROM interop.ocsp_response WHERE subject LIKE '%population'}),
	qr/could not reach the OCSP responder \Q$url\E/, 'the failed fetches are recorded');
# an interop.verify() of the provider's signature in SQL says the same
my $signed = $pop->safe_psql('postgres', q{SELECT interop.sign('{"a":1}'::jsonb)});
my ($vok, $vout, $verr) = $tax->psql('postgres', "SELECT interop.verify('$signed')");
like($verr, qr/no fresh OCSP answer \(interop.ocsp_max_age 40 s\) from the responder it names, \Q$url\E/,
	'a signature check names the responder and the freshness limit');

# A responder whose answers are signed by a certificate the CA did not
# delegate OCSP to: refused, recorded, nothing stored.
$responder = serve_ocsp($port, "$ca/issuing", "$dir/impostor", 0);
$pop->safe_psql('postgres', 'UPDATE interop.ocsp_response SET next_fetch = now()');
ok($pop->poll_query_until('postgres', q{
	SELECT bool_and(last_error LIKE '%was refused: its signature or its signer could not be verified%')
	FROM interop.ocsp_response}),
	'answers signed by a certificate without OCSP signing usage are refused');
is($pop->safe_psql('postgres', q{
	SELECT count(*) FROM interop.ocsp_response WHERE fetched_at > now() - interval '5 s'}), '0',
	'and none is stored');
stop_child($responder);

# The CA revokes the provider's certificate: the real responder says so.
sh("$TESTCA revoke $ca issuing $ca/population.crt");
$responder = serve_ocsp($port, "$ca/issuing", "$dir/responder", 0);
$pop->safe_psql('postgres', 'UPDATE interop.ocsp_response SET next_fetch = now()');
$tax->safe_psql('postgres', 'UPDATE interop.ocsp_response SET next_fetch = now()');
ok($pop->poll_query_until('postgres', q{
	SELECT status = 'revoked' AND revoked_at IS NOT NULL FROM interop.ocsp_response WHERE subject LIKE '%population'}),
	'the provider learns that its own certificate is revoked');
# the gateway takes the new answer with its next TLS context, at its next request
for (1 .. 100)
{
	($ok, $out, $err) = $tax->psql('postgres', $query);
	last if $err =~ /has been revoked/;
	usleep(100_000);
}
isnt($ok, 0, 'a revoked provider is refused by OCSP alone');
like($err, qr/TLS certificate of peer \Q$POP\E has been revoked/, 'the refusal says revoked');
# (the consumer may have learnt it from its own answer first: the gateway
# staples the new one from its next TLS context, made at a request after)
for (1 .. 100)
{
	$sclient = `echo | openssl s_client -connect 127.0.0.1:$pop->{interop_port} -status -CAfile $ca/fedroot/ca.crt -cert @{[node_chain_file($tax)]} -key @{[node_key_file($tax)]} 2>&1`;
	last if $sclient =~ /Cert Status: revoked/;
	usleep(100_000);
}
like($sclient, qr/Cert Status: revoked/, 'the gateway staples the answer that says revoked');
($vok, $vout, $verr) = $pop->psql('postgres', "SELECT interop.verify('$signed')");
like($verr, qr/certificate has been revoked.*\n.*as its OCSP responder answered/,
	'the provider\'s own signature check says revoked, as its OCSP responder answered');

done_testing();
