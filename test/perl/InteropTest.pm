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
use IO::Socket::INET;
use POSIX ();
use Exporter 'import';
our @EXPORT = qw(serve_tsa sh slurp spew federation_ca new_node new_standby set_setting gateway_url wait_for_gateway
  curl_gateway node_chain_file node_key_file in_child stop_child serve_files serve_ocsp lazy_commits commit_flushed $TOP $TESTCA $JWS);

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
#   conf: extra postgresql.conf lines as key => value; allows_streaming => 1
#   makes a primary that standbys can stream from
sub new_node
{
	my ($name, $member, $ca, %conf) = @_;
	my $streaming = delete $conf{allows_streaming};
	my $n = PostgreSQL::Test::Cluster->new($name);
	$n->init(allows_streaming => $streaming ? 1 : 0);
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

# new_standby(PRIMARY, NAME): a streaming hot standby of PRIMARY, made
# from a base backup (which carries the key file), with its own gateway
# port, started; it serves as PRIMARY's member once promoted
sub new_standby
{
	my ($primary, $name) = @_;
	my $backup = "for_$name";
	$primary->backup($backup);
	my $s = PostgreSQL::Test::Cluster->new($name);
	$s->init_from_backup($primary, $backup, has_streaming => 1);
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	$s->append_conf('postgresql.conf', "interop.port = $port\n");
	$s->{interop_port} = $port;
	$s->{interop_member} = $primary->{interop_member};
	$s->{interop_chain} = $primary->{interop_chain};
	$s->start;
	return $s;
}

# set_setting(NODE, NAME, VALUE): NAME = VALUE in NODE's postgresql.conf,
# reloaded, and waited for until a new session sees it (the postmaster
# reads the file after pg_reload_conf() returns; a session started before
# that would have the old value).  VALUE as current_setting() shows it.
sub set_setting
{
	my ($n, $name, $value) = @_;
	$n->append_conf('postgresql.conf', "$name = '$value'\n");
	$n->reload;
	$n->poll_query_until('postgres', "SELECT current_setting('$name') = '$value'")
	  or die "$name did not become $value";
}

# lazy_commits(NODE, ON): with ON, NODE's default becomes synchronous_commit =
# off and its WAL writer flushes at most every 10 s (after the first commit
# that wakes it), so that what a commit leaves unflushed stays so while a
# test looks; without, both are reset.  Needs pg_walinspect for
# commit_flushed(), created here.
sub lazy_commits
{
	my ($n, $on) = @_;
	$n->safe_psql('postgres', $on ? q{
		CREATE EXTENSION IF NOT EXISTS pg_walinspect;
		ALTER SYSTEM SET synchronous_commit = off;
		ALTER SYSTEM SET wal_writer_delay = '10s';
		SELECT pg_reload_conf()} : q{
		ALTER SYSTEM RESET synchronous_commit;
		ALTER SYSTEM RESET wal_writer_delay;
		SELECT pg_reload_conf()});
	# the workers take the new value when they next look at their latch
	usleep(500_000);
}

# commit_flushed(NODE, FROM, FLUSHED, XID): whether the commit of
# transaction XID (or of the one it is a subtransaction of) is in NODE's WAL
# between the positions FROM and FLUSHED (a flush position read earlier):
# '1' when it is, 'not flushed' when FLUSHED is below FROM, '0' otherwise.
# Needs pg_walinspect in database postgres (lazy_commits creates it).
sub commit_flushed
{
	my ($n, $from, $flushed, $xid) = @_;
	return $n->safe_psql('postgres', qq{
		SELECT CASE WHEN '$flushed'::pg_lsn < '$from' THEN 'not flushed'
		ELSE (SELECT count(*)::text FROM pg_get_wal_records_info('$from', '$flushed')
		      WHERE resource_manager = 'Transaction' AND record_type = 'COMMIT'
		      AND (xid = '$xid' OR ' ' || substring(description FROM 'subxacts:([ 0-9]+)') || ' ' LIKE '% $xid %')) END});
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
	# (as docs/protocol.md has clients do).
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

# in_child(CODE): CODE in a child process (a small server of the test's own);
# returns its pid.  The child leaves with POSIX::_exit and takes TERM as
# the default action: the test's END blocks (which stop every node) and its
# signal handlers (PostgreSQL 17's Cluster.pm dies on TERM, and the END
# blocks would then run in the child) belong to the test process alone.
sub in_child
{
	my ($code) = @_;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	return $pid if $pid;
	$SIG{TERM} = $SIG{INT} = 'DEFAULT';
	eval { $code->(); };
	POSIX::_exit(0);
}

# stop_child(PID): stop a child of in_child() and wait for it
sub stop_child
{
	my ($pid) = @_;
	return unless $pid;
	local $?;	# in an END block, $? is the test's exit status
	kill 'TERM', $pid;
	waitpid($pid, 0);
}

# serve_files(PORT, DIR, TYPE): a plain HTTP server on loopback for the
# files of DIR (a CRL distribution point, say), as TYPE; 404 for anything
# else.  Returns the child's pid.
sub serve_files
{
	my ($port, $dir, $type) = @_;
	my $server = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
		Listen => 8, ReuseAddr => 1) or die "cannot listen on $port: $!";
	my $pid = in_child(sub {
		while (my $c = $server->accept)
		{
			my $line = <$c> // '';
			while (my $h = <$c>) { last if $h =~ /^\r?\n$/ }
			my ($path) = $line =~ m{^GET (/[\w.-]*)};
			my $file = defined $path ? "$dir$path" : undef;
			if (defined $file && -f $file)
			{
				my $body = slurp($file);
				print $c "HTTP/1.0 200 OK\r\nContent-Type: $type\r\nContent-Length: "
				  . length($body) . "\r\n\r\n$body";
			}
			else { print $c "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n" }
			close $c;
		}
	});
	close $server;
	return $pid;
}

# serve_ocsp(PORT, CA, RESPONDER, NMIN): an OCSP responder on loopback for
# the certificates of CA (a testca directory): each POSTed request is
# answered by "openssl ocsp" from CA's index.txt as it is at that moment,
# signed with RESPONDER.key (RESPONDER.crt), nextUpdate NMIN minutes on
# (none when 0).  Every request is counted in CA/ocsp.count.  Returns the
# child's pid.
sub serve_ocsp
{
	my ($port, $ca, $responder, $nmin) = @_;
	my $next = $nmin ? "-nmin $nmin" : '';
	return serve_post($port, "$ca/ocsp.count", 'application/ocsp-response', sub {
		spew("$ca/ocsp.req", shift);
		unlink "$ca/ocsp.resp";
		system("openssl ocsp -index $ca/index.txt -CA $ca/ca.crt -rsigner $responder.crt "
			  . "-rkey $responder.key -reqin $ca/ocsp.req -respout $ca/ocsp.resp $next >/dev/null 2>&1");
		return -s "$ca/ocsp.resp" ? slurp("$ca/ocsp.resp") : undef;
	});
}

# serve_post(PORT, COUNT_FILE, CONTENT_TYPE, ANSWER): a one-connection-at-a-time
# HTTP/1.0 server on loopback (in a child): each POST body goes to ANSWER,
# whose bytes are sent back as CONTENT_TYPE (400 when it returns undef, or
# for anything but a POST); COUNT_FILE holds the number of requests.
sub serve_post
{
	my ($port, $count_file, $ctype, $answer) = @_;
	my $server = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
		Listen => 8, ReuseAddr => 1) or die "cannot listen on $port: $!";
	my $pid = in_child(sub {
		my $n = 0;
		while (my $c = $server->accept)
		{
			binmode $c;
			my $line = <$c> // '';
			my $len = 0;
			while (my $h = <$c>)
			{
				last if $h =~ /^\r?\n$/;
				$len = $1 if $h =~ /^Content-Length:\s*(\d+)/i;
			}
			my $body = '';
			read($c, $body, $len) if $len > 0 && $len < 65536;
			my $resp = $answer->($body);
			spew($count_file, ++$n);
			if ($line =~ /^POST / && defined $resp)
			{
				print $c "HTTP/1.0 200 OK\r\nContent-Type: $ctype\r\nContent-Length: "
				  . length($resp) . "\r\n\r\n$resp";
			}
			else { print $c "HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n" }
			close $c;
		}
	});
	close $server;
	return $pid;
}

# serve_tsa(PORT, DIR, TSA, CHAIN): an RFC 3161 time-stamping authority on
# loopback: each POSTed request is answered by "openssl ts -reply", signed
# with TSA.key (certificate TSA.crt, CHAIN added to the token).  DIR holds
# its configuration, serial and the count of requests (tsa.count).
sub serve_tsa
{
	my ($port, $dir, $tsa, $chain) = @_;
	spew("$dir/tsa.cnf", <<"CNF");
[ tsa ]
default_tsa = this
[ this ]
serial = $dir/tsa.serial
signer_cert = $tsa.crt
signer_key = $tsa.key
certs = $chain
signer_digest = sha256
default_policy = 1.3.6.1.4.1.4146.2.3
digests = sha256, sha384, sha512
accuracy = secs:1
ess_cert_id_alg = sha256
CNF
	spew("$dir/tsa.serial", "01\n") unless -e "$dir/tsa.serial";
	return serve_post($port, "$dir/tsa.count", 'application/timestamp-reply', sub {
		spew("$dir/tsa.req", shift);
		unlink "$dir/tsa.resp";
		system("openssl ts -reply -config $dir/tsa.cnf -queryfile $dir/tsa.req -out $dir/tsa.resp >/dev/null 2>&1");
		return -s "$dir/tsa.resp" ? slurp("$dir/tsa.resp") : undef;
	});
}

# No server of a test may crash: a process that died of a signal nobody sent
# (a segmentation fault, an abort) fails the test file that saw it, whatever
# its own tests said.  The tests' own kill -9 are signal 9 and pass.
END
{
	my $name = $0;
	$name =~ s{.*/}{};
	$name =~ s{\.pl$}{};
	my @crashes;
	for my $log (glob("$PostgreSQL::Test::Utils::log_path/${name}_*.log"))
	{
		open my $h, '<', $log or next;
		while (my $line = <$h>)
		{
			push @crashes, "$log: $line"
			  if $line =~ /terminated by signal (4|6|7|8|11):|TRAP: /;
		}
	}
	if (@crashes)
	{
		Test::More::diag($_) for @crashes;
		Test::More::fail('no server process crashed');
	}
}

1;
