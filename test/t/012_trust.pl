# 012_trust.pl: the protocol's trust gaps that the 0.1.0 review found.
# Proves that
#  - a payload signed with interop.sign() never passes for a protocol
#    message: as a request the gateway answers 400 bad_request, and as an
#    answer (a provider's user forging one, served by a fake gateway with
#    the provider's own TLS identity) the consumer refuses it (IX009); both
#    were accepted before 0.2.0;
#  - a member_mismatch refusal logs the verified signer as peer, not the
#    claimed issuer;
#  - idle TCP connections that never start TLS do not make authenticated
#    clients get 429, and a 429 is signed and bound to the request (req),
#    so an asynchronous request retries instead of failing with IX008;
#  - revocation of members certified by another intermediate: the CRL
#    distribution point named in a peer's chain is fetched as it is seen,
#    the CRL of that intermediate is installed (add_crl refused it before
#    0.2.0), a revoked member is refused, and interop.revocation_check
#    decides what an unknown status gets;
#  - trust changes while the sync worker's transfers are in flight lose
#    nothing and crash nothing (test/valgrind runs the same under memcheck).
use strict;
use warnings;
use IO::Socket::INET;
use IO::Socket::SSL;
use MIME::Base64 qw(encode_base64 decode_base64);
use Digest::SHA qw(sha256);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use InteropTest;

my $dir = PostgreSQL::Test::Utils::tempdir();
my $http_port = PostgreSQL::Test::Cluster::get_free_port();
my $cdp = "http://127.0.0.1:$http_port/issuing2.crl";
my $ca = federation_ca($dir);
{
	local $ENV{TESTCA_CDP} = $cdp;
	sh("$TESTCA sub $ca issuing2 fedroot");
}
mkdir "$dir/www";
sub publish_crl
{
	sh("$TESTCA crl $ca issuing2 $dir/issuing2.crl.pem");
	sh("openssl crl -in $dir/issuing2.crl.pem -outform DER -out $dir/www/issuing2.crl.tmp");
	rename "$dir/www/issuing2.crl.tmp", "$dir/www/issuing2.crl" or die $!;
}

my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $PORTAL = 'MN/GOV/3000003/portal';
my $pop = new_node('population', $POP, $ca, 'interop.sync_interval' => "'1s'", 'interop.seal_interval' => 0,
	'interop.gateway_max_connections' => 4);
my $tax = new_node('tax', $TAX, $ca, 'interop.gateway_workers' => 0, 'interop.seal_interval' => 0);
sub b64url { my $s = encode_base64($_[0], ''); $s =~ tr{+/}{-_}; $s =~ s/=+$//; $s }
sub unb64url { my $s = $_[0]; $s =~ tr{-_}{+/}; $s .= '=' x ((4 - length($s) % 4) % 4); decode_base64($s) }

$pop->safe_psql('postgres', qq{
	CREATE TABLE person (id text PRIMARY KEY, name text);
	INSERT INTO person SELECT 'P' || i, 'Person ' || i FROM generate_series(1, 100) i;
	SELECT interop.publish('person', 'person', filter_columns => '{id}');
	SELECT interop.grant_access('person', '$TAX');
	SELECT interop.grant_access('person', '$PORTAL');
	CREATE ROLE regress_app LOGIN IN ROLE interop_user;
});
$tax->safe_psql('postgres', qq{
	SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}');
	CREATE ROLE regress_app LOGIN IN ROLE interop_user;
});
ok(wait_for_gateway($pop, "$ca/fedroot/ca.crt", $tax), 'the provider gateway is up');
my $ask = qq{SELECT q->>'name' FROM interop.query('$POP', 'person', '{"id":"P1"}') q};
is($tax->safe_psql('postgres', $ask), 'Person 1', 'the consumer is served');

# ---- F3: sign() never makes a protocol message ----

# claims(NODE): a request of tax to pop, as claims
sub request_claims
{
	my (%c) = @_;
	my $now = time();
	return qq({"iss":"@{[$c{iss} // $TAX]}","aud":"$POP","svc":"person","params":{"id":"P1"},"purpose":null,)
	  . qq("iat":$now,"exp":@{[$now + 60]},"jti":"@{[$c{jti} // lc(sprintf('%08x-0000-4000-8000-%012x', int(rand(2**31)), int(rand(2**40))))]}"});
}
my $signed = $tax->safe_psql('postgres', "SET ROLE regress_app; SELECT interop.sign('@{[request_claims()]}')");
my ($code, $body) = curl_gateway($pop, '/v1/query', as => $tax, body => $signed);
is($code, '400', 'a request signed with interop.sign() is refused (it was answered 200 before 0.2.0)');
like(unb64url((split /\./, $body)[1] // ''), qr/"code":"bad_request".*JWS is not an interop request/,
	'... as a signed bad_request that names the typ');

# a provider's user forges an answer with sign(); a fake gateway serves it
# with the provider's own TLS identity
my $fake_port = PostgreSQL::Test::Cluster::get_free_port();
my $fake = IO::Socket::SSL->new(LocalAddr => '127.0.0.1', LocalPort => $fake_port, Listen => 4, ReuseAddr => 1,
	SSL_cert_file => node_chain_file($pop), SSL_key_file => node_key_file($pop),
	SSL_verify_mode => SSL_VERIFY_NONE) or die "fake gateway: $SSL_ERROR";
my $fake_pid = in_child(sub {
	while (my $c = $fake->accept)
	{
		my ($len, $line) = (0, '');
		while (defined($line = <$c>) && $line !~ /^\r?\n$/) { $len = $1 if $line =~ /^Content-Length:\s*(\d+)/i }
		read($c, my $req, $len);
		my ($jti) = unb64url((split /\./, $req)[1]) =~ /"jti":"([^"]+)"/;
		my $claims = qq({"iss":"$POP","aud":"$TAX","jti":"$jti","req":") . b64url(sha256($req))
		  . qq(","iat":@{[time()]},"columns":[{"name":"name","type":"text"}],"rows":[["forged"]],"truncated":false});
		my $jws;
		IPC::Run::run(['psql', '-XAtq', '-h', $pop->host, '-p', $pop->port, '-d', 'postgres',
			'-c', 'SET ROLE regress_app', '-c', "SELECT interop.sign('$claims')"], '>', \$jws);
		chomp $jws;
		print $c "HTTP/1.1 200 OK\r\nContent-Type: application/jose\r\nContent-Length: " . length($jws)
		  . "\r\nConnection: close\r\n\r\n$jws";
		close $c;
	}
});
close $fake;
END { stop_child($fake_pid) }
$tax->safe_psql('postgres', "SELECT interop.add_peer('$POP', 'https://127.0.0.1:$fake_port')");
my ($ret, $out, $err) = $tax->psql('postgres', $ask, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
isnt($out, 'forged', 'an answer a provider\'s user signed with interop.sign() is not taken (it was before 0.2.0)');
like($err, qr/IX009: JWS is not an interop response/, '... the consumer says why (IX009)');
stop_child($fake_pid);
$tax->safe_psql('postgres', "SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}')");

# a peer's answer that begins with "~" and a known header digest, as the
# log's own references do, is logged as it came and never read as one
my $digest = $tax->safe_psql('postgres', 'SELECT digest FROM interop.message_header ORDER BY id LIMIT 1');
my $garbage = "~$digest.Zm9v.YmFy";
my $fake2 = IO::Socket::SSL->new(LocalAddr => '127.0.0.1', LocalPort => $fake_port, Listen => 4, ReuseAddr => 1,
	SSL_cert_file => node_chain_file($pop), SSL_key_file => node_key_file($pop),
	SSL_verify_mode => SSL_VERIFY_NONE) or die "fake gateway: $SSL_ERROR";
my $fake2_pid = in_child(sub {
	while (my $c = $fake2->accept)
	{
		my ($len, $line) = (0, '');
		while (defined($line = <$c>) && $line !~ /^\r?\n$/) { $len = $1 if $line =~ /^Content-Length:\s*(\d+)/i }
		read($c, my $req, $len);
		print $c "HTTP/1.1 200 OK\r\nContent-Type: application/jose\r\nContent-Length: " . length($garbage)
		  . "\r\nConnection: close\r\n\r\n$garbage";
		close $c;
	}
});
close $fake2;
END { stop_child($fake2_pid) }
$tax->safe_psql('postgres', "SELECT interop.add_peer('$POP', 'https://127.0.0.1:$fake_port')");
($ret, $out, $err) = $tax->psql('postgres', $ask);
isnt($ret, 0, 'an answer that is no JWS is refused');
is($tax->safe_psql('postgres', q{
	SELECT left(response, 2) = '~~' AND interop.message_jws(response) = response_raw
	FROM (SELECT response, substr(response, 2) AS response_raw FROM interop.message_log
	      WHERE direction = 'out' ORDER BY id DESC LIMIT 1) r}), 't',
	'it is logged with one more "~" in front');
is($tax->safe_psql('postgres', q{
	SELECT interop.message_jws(response) FROM interop.message_log WHERE direction = 'out' ORDER BY id DESC LIMIT 1}),
	$garbage, 'and message_jws() gives back exactly the bytes that came, not a message with that header');
stop_child($fake2_pid);
$tax->safe_psql('postgres', "SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}')");

# ---- F4: a member_mismatch is logged under the verified signer ----
my $tmp = PostgreSQL::Test::Utils::tempdir();
spew("$tmp/claims.json", request_claims(iss => $PORTAL));
my $mismatch = sh("$JWS sign ES256 @{[node_key_file($tax)]} @{[node_chain_file($tax)]} \"\$(cat $tmp/claims.json)\"");
chomp $mismatch;
($code, $body) = curl_gateway($pop, '/v1/query', as => $tax, body => $mismatch);
is($code, '401', 'a request whose iss is not its signer is refused 401');
is($pop->safe_psql('postgres', q{SELECT peer || ' ' || error_code FROM interop.message_log ORDER BY id DESC LIMIT 1}),
	"$TAX member_mismatch", 'the provider logs the verified signer as peer, not the claimed issuer');
like($pop->safe_psql('postgres', q{SELECT error_message FROM interop.message_log ORDER BY id DESC LIMIT 1}),
	qr/claims iss "\Q$PORTAL\E"/, '... and keeps the claimed issuer in the error message');

# ---- F1: idle connections and overload ----
my @idle = map { IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $pop->{interop_port}) or die $! } 1 .. 40;
is($tax->safe_psql('postgres', $ask), 'Person 1',
	'40 TCP connections that never start TLS do not crowd out an authenticated client (limit 4 per worker)');
close $_ for @idle;

# TLS clients that hold their connections open beyond the limit: the next get a signed 429
my @held;
for (1 .. 30)
{
	my $s = IO::Socket::SSL->new(PeerAddr => '127.0.0.1', PeerPort => $pop->{interop_port},
		SSL_cert_file => node_chain_file($tax), SSL_key_file => node_key_file($tax),
		SSL_verify_mode => SSL_VERIFY_NONE) or die "client: $SSL_ERROR";
	push @held, $s;
}
my $id = $tax->safe_psql('postgres', qq{SELECT interop.query_async('$POP', 'person', '{"id":"P2"}')});
ok($tax->poll_query_until('postgres', qq{SELECT attempts >= 1 FROM interop.async_request WHERE id = $id}),
	'an asynchronous request is tried while the provider is over its connection limit');
is($tax->safe_psql('postgres', qq{SELECT state || ' ' || coalesce(http_status::text, '') || ' ' || coalesce(error_code, '')
	FROM interop.async_request WHERE id = $id}), 'pending 429 IX429',
	'the signed 429 (bound to the request by req) leaves it pending for a retry; it failed with IX008 before 0.2.0');
close $_ for @held;
is($tax->safe_psql('postgres', "SELECT interop.wait($id, '60 s')"), 'done', 'and it is delivered once connections free up');
is($tax->safe_psql('postgres', "SELECT r->>'name' FROM interop.result($id) r"), 'Person 2', 'with its row');

# ---- F2: CRLs of another intermediate, from the distribution point seen ----
publish_crl();
my $http_pid = serve_files($http_port, "$dir/www", 'application/pkix-crl');
END { stop_child($http_pid) }

# before any chain through issuing2 was seen, its CRL needs its CA
($ret, $out, $err) = $pop->psql('postgres', "SELECT interop.add_crl(\$\$@{[slurp(\"$dir/issuing2.crl.pem\")]}\$\$)");
like($err, qr/not signed by a CA this node trusts/, 'the CRL of an intermediate never seen is refused on its own');
is($pop->safe_psql('postgres', "SELECT interop.add_crl(\$\$@{[slurp(\"$dir/issuing2.crl.pem\")]}\$\$, \$\$@{[slurp(\"$ca/issuing2/ca.crt\")]}\$\$)"),
	't', 'with the CA that issued it (which chains to the anchor), it is installed');
$pop->safe_psql('postgres', q{DELETE FROM interop.crl WHERE issuer = '/CN=issuing2'; DELETE FROM interop.ca_certificate});

# the portal is certified by issuing2, whose certificates name a distribution point
my $portal = PostgreSQL::Test::Cluster->new('portal');
$portal->init;
$portal->append_conf('postgresql.conf', "shared_preload_libraries = 'interop'\ninterop.gateway_workers = 0\ninterop.seal_interval = 0\n");
$portal->start;
$portal->safe_psql('postgres', "CREATE EXTENSION interop; SELECT interop.init_node('$PORTAL')");
spew("$dir/portal.csr", $portal->safe_psql('postgres', 'SELECT interop.certificate_request()') . "\n");
{
	local $ENV{TESTCA_CDP} = $cdp;
	sh("$TESTCA sign $ca issuing2 $dir/portal.csr $dir/portal.crt");
}
my $portal_chain = sh("$TESTCA chain $ca issuing2 $dir/portal.crt");
$portal->safe_psql('postgres', "SELECT interop.add_trust_anchor(\$\$@{[slurp(\"$ca/fedroot/ca.crt\")]}\$\$)");
$portal->safe_psql('postgres', "SELECT interop.install_certificate(\$\$$portal_chain\$\$)");
$portal->safe_psql('postgres', "SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}')");
my $portal_ask = qq{SELECT q->>'name' FROM interop.query('$POP', 'person', '{"id":"P3"}') q};

my ($served, $first_err, @errs) = ('', '');
for (1 .. 100)
{
	($ret, $out, $err) = $portal->psql('postgres', $portal_ask);
	push @errs, $err if $err;
	$first_err ||= $err;
	if ($ret == 0) { $served = $out; last }
	usleep(200_000);
}
like($first_err, qr/refused this node's TLS certificate/, 'the first call of a member whose CA\'s CRL the provider has not seen yet is refused');
# the provider's alert arrives: the client's request, already sent, does not
# turn the close into a reset (it did: "getpeername() failed", one run in three)
is(join('', map { "$_\n" } grep { !/refused this node's TLS certificate/ } @errs), '',
	'... and every refusal says so, none is a broken connection');
is($served, 'Person 3', 'the provider fetches that CRL from the distribution point in the member\'s chain, then serves it');
is($pop->safe_psql('postgres', "SELECT fetched_at IS NOT NULL FROM interop.crl_source WHERE url = '$cdp'"), 't',
	'the distribution point is in interop.crl_source');
is($pop->safe_psql('postgres', q{SELECT count(*) FROM interop.crl WHERE issuer = '/CN=issuing2'}), '1',
	'the CRL of issuing2 (not an anchor, not in the provider\'s chain) is installed');

my $before = $pop->safe_psql('postgres', q{SELECT this_update FROM interop.crl WHERE issuer = '/CN=issuing2'});
sleep(1);
sh("$TESTCA revoke $ca issuing2 $dir/portal.crt");
publish_crl();
ok($pop->poll_query_until('postgres', qq{SELECT this_update > '$before' FROM interop.crl WHERE issuer = '/CN=issuing2'}),
	'the CRL that revokes the portal is fetched');
my $refused = 0;
for (1 .. 50)
{
	($ret, $out, $err) = $portal->psql('postgres', $portal_ask);
	if ($ret != 0) { $refused = 1; last }
	usleep(100_000);
}
ok($refused, 'the revoked member is refused');

# no CRL at all: require refuses a certificate that names a distribution point
$pop->safe_psql('postgres', q{DELETE FROM interop.crl WHERE issuer = '/CN=issuing2'});
unlink "$dir/www/issuing2.crl";
my $jws_portal = $portal->safe_psql('postgres', q{SELECT interop.sign('{"x":1}')});
($ret, $out, $err) = $pop->psql('postgres', "SELECT interop.verify('$jws_portal')", extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/IX012: revocation status of certificate .* is unknown/, 'require: an unknown revocation status is refused (IX012)');
$pop->append_conf('postgresql.conf', 'interop.revocation_check = best_effort');
$pop->reload;
usleep(300_000);
is($pop->safe_psql('postgres', "SELECT interop.verify('$jws_portal')->>'x'"), '1', 'best_effort: it is accepted');

# ---- D: trust changes while transfers are in flight ----
sh("$TESTCA root $dir otherca");
my $other_pem = slurp("$dir/otherca/ca.crt");
my $sync_pid = $tax->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'interop sync'});
my $ids = $tax->safe_psql('postgres', qq{
	SELECT string_agg(interop.query_async('$POP', 'person', jsonb_build_object('id', 'P' || i))::text, ',')
	FROM generate_series(1, 300) i});
for (1 .. 20)
{
	$tax->safe_psql('postgres', "SELECT interop.add_trust_anchor(\$\$$other_pem\$\$)");
	usleep(50_000);
	$tax->safe_psql('postgres', q{DELETE FROM interop.trust_anchor WHERE subject ~ 'otherca'});
	usleep(50_000);
}
is($tax->safe_psql('postgres', "SELECT string_agg(DISTINCT interop.wait(id, '120 s'), ',') FROM unnest('{$ids}'::bigint[]) id"),
	'done', '300 asynchronous requests delivered while trust changed 40 times');
is($tax->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'interop sync'}), $sync_pid,
	'the sync worker is still the same process');

done_testing();
