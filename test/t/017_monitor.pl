# 017_monitor.pl: what a DBA wires to a load balancer and to Prometheus.
# Proves that
#  - interop.monitor_port serves readiness (GET /v1/health) and /metrics over
#    plain HTTP, with no client certificate and no node key, and nothing else;
#  - readiness is true: 503 with the reason while the message log cannot be
#    written, and once the node's own certificate has expired; 200 again when
#    the log is written;
#  - the metrics people alert on are there (certificate expiry, seal age,
#    unsealed records, log writer queue, refused handshakes by reason, the
#    async queue and its oldest request, subscription lag), promtool finds
#    nothing wrong with them, and Prometheus from Debian's package scrapes
#    them.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use POSIX qw(strftime);
use InteropTest;

my $ca  = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $mport = PostgreSQL::Test::Cluster::get_free_port();
my $pop = new_node('population', $POP, $ca, 'interop.monitor_port' => $mport, 'interop.seal_interval' => 0);
my $tax = new_node('tax', $TAX, $ca, 'interop.gateway_workers' => 0);
$pop->safe_psql('postgres', qq{
	CREATE TABLE person (id text PRIMARY KEY, name text);
	INSERT INTO person VALUES ('P1', 'Person 1');
	SELECT interop.publish('person', 'person', filter_columns => '{id}');
	SELECT interop.grant_access('person', '$TAX');
});
$tax->safe_psql('postgres', "SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}')");
ok(wait_for_gateway($pop, "$ca/fedroot/ca.crt", $tax), 'the provider gateway is up');
my $ask = qq{SELECT q->>'name' FROM interop.query('$POP', 'person', '{"id":"P1"}') q};
is($tax->safe_psql('postgres', $ask), 'Person 1', 'an exchange');

# plain HTTP on the monitoring port, as a load balancer or Prometheus calls it
sub monitor
{
	my ($path) = @_;
	my ($out, $err);
	IPC::Run::run([ 'curl', '-sS', '--max-time', '10', '-w', '\n%{http_code}', "http://127.0.0.1:$mport$path" ],
		'>', \$out, '2>', \$err);
	my ($body, $code) = ($out // '') =~ /\A(.*)\n(\d+)\z/s;
	return ($code // '000', $body // $err);
}

my ($code, $body) = monitor('/v1/health');
is($code, '200', 'readiness without a client certificate or key: 200');
like($body, qr/"status":"ok","member":"MN\/GOV\/1000001\/population"/, '... ok, and the member');
($code) = monitor('/v1/query');
is($code, '404', 'the monitoring port serves nothing else');
($code) = curl_gateway($pop, '/v1/health');
is($code, '000', 'the gateway port still refuses a client without a certificate');

# a handshake refused for lack of a client certificate is counted
($code, $body) = monitor('/metrics');
is($code, '200', '/metrics on the monitoring port');
like($body, qr/^interop_tls_handshakes_refused_total\{reason="[^"]+"\} [1-9]\d*$/m, 'refused handshakes by reason');
like($body, qr/^interop_certificate_expiry_timestamp_seconds \d+$/m, 'the own certificate\'s expiry');
like($body, qr/^interop_unsealed_records\{log="message_log"\} [1-9]\d*$/m, 'unsealed records');
$pop->safe_psql('postgres', 'SELECT interop.seal_log()');
($code, $body) = monitor('/metrics');
like($body, qr/^interop_unsealed_records\{log="message_log"\} 0$/m, '... none after seal_log()');
like($body, qr/^interop_seal_age_seconds\{log="message_log"\} [\d.e+-]+$/m, 'the age of the newest seal');
like($body, qr/^interop_log_queue_records \d+$/m, 'the log writer\'s queue');
like($body, qr/^interop_async_oldest_pending_seconds 0$/m, 'the oldest pending asynchronous query');

# promtool: the exposition format is right, and the names follow the conventions
my $tmp = PostgreSQL::Test::Utils::tempdir();
spew("$tmp/metrics", $body);
my ($pout, $perr);
my $ok = IPC::Run::run([ 'promtool', 'check', 'metrics' ], '<', "$tmp/metrics", '>', \$pout, '2>', \$perr);
is(($pout // '') . ($perr // ''), '', 'promtool check metrics reports nothing');
ok($ok, '... and exits 0');

# Prometheus scrapes it
my $pport = PostgreSQL::Test::Cluster::get_free_port();
spew("$tmp/prometheus.yml", <<"YML");
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: interop
    static_configs:
      - targets: ['127.0.0.1:$mport']
YML
my $prom = IPC::Run::start([ 'prometheus', "--config.file=$tmp/prometheus.yml", "--storage.tsdb.path=$tmp/tsdb",
	"--web.listen-address=127.0.0.1:$pport" ], '>', "$tmp/prometheus.log", '2>&1');
my $scraped = '';
for (1 .. 150)
{
	my ($out, $err);
	IPC::Run::run([ 'curl', '-sS', '--max-time', '5', '-G', "http://127.0.0.1:$pport/api/v1/query",
		'--data-urlencode', 'query=interop_certificate_expiry_timestamp_seconds' ], '>', \$out, '2>', \$err);
	if (($out // '') =~ /"result":\[\{"metric":\{[^}]*"job":"interop"/) { $scraped = $out; last }
	usleep(200_000);
}
like($scraped, qr/"__name__":"interop_certificate_expiry_timestamp_seconds"/, 'Prometheus scraped the node');
$prom->kill_kill;

# ---- readiness is true: the log ----
$pop->safe_psql('postgres', 'REVOKE INSERT ON interop.message_log FROM interop_worker');
my ($ret, $out, $err) = $tax->psql('postgres', $ask);
like($err, qr/HTTP 500/, 'an exchange whose provider cannot write its log fails');
($code, $body) = monitor('/v1/health');
is($code, '503', 'readiness: 503 while the log cannot be written');
like($body, qr/"status":"not_ready".*the message log could not be written: permission denied/, '... and says why');
$pop->safe_psql('postgres', 'GRANT INSERT ON interop.message_log TO interop_worker');
is($tax->safe_psql('postgres', $ask), 'Person 1', 'the log can be written again');
($code) = monitor('/v1/health');
is($code, '200', 'readiness: 200 again');

# ---- a consumer whose own certificate expired is told so ----
my $fmt = '%Y%m%d%H%M%SZ';
spew("$ca/tax-short.csr", $tax->safe_psql('postgres', 'SELECT interop.certificate_request()') . "\n");
sh("$TESTCA sign $ca issuing $ca/tax-short.csr $ca/tax-short.crt "
	  . strftime($fmt, gmtime(time() - 60)) . ' ' . strftime($fmt, gmtime(time() + 3)));
my $tax_short = sh("$TESTCA chain $ca issuing $ca/tax-short.crt");
$tax->safe_psql('postgres', "SELECT interop.install_certificate(\$\$$tax_short\$\$)");
sleep 5;
($ret, $out, $err) = $tax->psql('postgres', $ask, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/refused this node's TLS certificate: it has expired/, 'a consumer with an expired certificate is told its own has expired');
like($err, qr/HINT:  This node's own certificate is out of date/, '... and what to do (not to check the peer)');
$tax->safe_psql('postgres', "SELECT interop.install_certificate(\$\$@{[slurp(node_chain_file($tax))]}\$\$)");
is($tax->safe_psql('postgres', $ask), 'Person 1', 'with its certificate renewed it is served again');

# ---- readiness is true: the node's own certificate ----
spew("$ca/pop-short.csr", $pop->safe_psql('postgres', 'SELECT interop.certificate_request()') . "\n");
sh("$TESTCA sign $ca issuing $ca/pop-short.csr $ca/pop-short.crt "
	  . strftime($fmt, gmtime(time() - 60)) . ' ' . strftime($fmt, gmtime(time() + 4)));
my $short = sh("$TESTCA chain $ca issuing $ca/pop-short.crt");
$pop->safe_psql('postgres', "SELECT interop.install_certificate(\$\$$short\$\$)");
sleep 6;
my $expired = '';
for (1 .. 50)
{
	($code, $body) = monitor('/v1/health');
	if ($code eq '503') { $expired = $body; last }
	usleep(200_000);
}
like($expired, qr/"status":"not_ready".*the node's certificate has expired/, 'readiness: 503 once the node\'s certificate has expired');

done_testing();
