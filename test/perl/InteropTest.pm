# InteropTest: what the multi-node TAP tests share.  A throw-away federation
# CA (test/certs/testca), nodes with their own identity and gateway port, and
# small helpers to call a gateway with curl as any HTTP client would.
package InteropTest;
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use Time::HiRes qw(usleep time);
use Exporter 'import';
our @EXPORT = qw(sh slurp spew federation_ca new_node gateway_url wait_for_gateway
  curl_gateway node_chain_file node_key_file $TOP $TESTCA $JWS);

our $TOP    = abs_path(dirname(__FILE__) . '/../..');
our $TESTCA = "$TOP/test/certs/testca";
our $JWS    = "$TOP/test/certs/jws";

sub sh { my $cmd = shift; my $out = `$cmd`; die "failed ($?): $cmd\n" if $?; return $out }
sub slurp { my $f = shift; open my $h, '<', $f or die "$f: $!"; local $/; <$h> }
sub spew { my ($f, $s) = @_; open my $h, '>', $f or die "$f: $!"; print $h $s; close $h }

# federation_ca(DIR): a root CA "fedroot" and an issuing CA "issuing" in DIR
sub federation_ca
{
	my $dir = shift;
	sh("$TESTCA root $dir fedroot && $TESTCA sub $dir issuing fedroot");
	return $dir;
}

# new_node(NAME, MEMBER, CA_DIR, %conf): a started cluster with interop, its
# identity certified by the issuing CA, and its own gateway port.
#   conf: extra postgresql.conf lines as key => value
sub new_node
{
	my ($name, $member, $ca, %conf) = @_;
	my $n = PostgreSQL::Test::Cluster->new($name);
	$n->init;
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	$n->{interop_port} = $port;
	$n->append_conf('postgresql.conf', join("\n",
		"shared_preload_libraries = 'interop'",
		"interop.port = $port",
		"interop.listen_addresses = '127.0.0.1'",
		"interop.gateway_workers = 2",
		map { "$_ = $conf{$_}" } sort keys %conf) . "\n");
	$n->start;
	$n->safe_psql('postgres', 'CREATE EXTENSION interop');
	$n->safe_psql('postgres', "SELECT interop.init_node('$member')");
	my $csr = $n->safe_psql('postgres', 'SELECT interop.certificate_request()');
	spew("$ca/$name.csr", "$csr\n");
	sh("$TESTCA sign $ca issuing $ca/$name.csr $ca/$name.crt");
	my $chain = sh("$TESTCA chain $ca issuing $ca/$name.crt");
	my $root = slurp("$ca/fedroot/ca.crt");
	$n->safe_psql('postgres', "SELECT interop.add_trust_anchor(\$\$$root\$\$)");
	$n->safe_psql('postgres', "SELECT interop.install_certificate(\$\$$chain\$\$)");
	spew("$ca/$name.chain", $chain);
	$n->{interop_member} = $member;
	$n->{interop_chain} = "$ca/$name.chain";
	return $n;
}

sub gateway_url { my $n = shift; return "https://127.0.0.1:$n->{interop_port}" }
sub node_chain_file { return $_[0]->{interop_chain} }
sub node_key_file { return $_[0]->data_dir . '/interop/node.key' }

# curl_gateway(NODE, PATH, %opt): (http status, body) of a request to NODE's
# gateway.  opt: as => client node (its certificate), method, body, ctype,
# extra (more curl arguments).
sub curl_gateway
{
	my ($n, $path, %opt) = @_;
	my $tmp = PostgreSQL::Test::Utils::tempdir();
	# A node certificate names a member id, not a host, so curl's host name
	# check cannot pass: -k, and trust comes from verifying the signed body
	# (as DESIGN §5 has clients do).
	my @cmd = ('curl', '-sS', '-k', '--max-time', '20', '-o', "$tmp/body", '-w', '%{http_code}');
	push @cmd, '--cert', node_chain_file($opt{as}), '--key', node_key_file($opt{as}) if $opt{as};
	push @cmd, '-X', $opt{method} if $opt{method};
	if (defined $opt{body})
	{
		spew("$tmp/req", $opt{body});
		push @cmd, '--data-binary', "\@$tmp/req",
		  '-H', 'Content-Type: ' . ($opt{ctype} // 'application/jose');
	}
	push @cmd, @{ $opt{extra} // [] };
	push @cmd, gateway_url($n) . $path;
	my ($out, $err);
	IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
	my $body = -f "$tmp/body" ? slurp("$tmp/body") : '';
	return ($out, $body, $err);
}

# wait_for_gateway(NODE, CAFILE, CLIENT): until /v1/health answers 200
sub wait_for_gateway
{
	my ($n, $cafile, $client) = @_;
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		my ($code) = curl_gateway($n, '/v1/health', cafile => $cafile, as => $client);
		return 1 if defined $code && $code eq '200';
		usleep(100_000);
	}
	return 0;
}

1;
