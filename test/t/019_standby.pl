# 019_standby.pl: interop on a primary with a streaming hot standby.
# Proves that
#  - on the standby no worker of interop runs, one LOG line says why, every
#    function that writes refuses with one clear error, and what only reads
#    (verify_log(), subject_access_report(), the tables and views) works;
#  - with interop.require_synchronous_log on, the gateway answers 503
#    (signed, not_durable) and /v1/health is not ready while no synchronous
#    standby streams, and interop.query() refuses on the consumer; with
#    the standby streaming synchronously every answer's record is on it;
#  - an answer whose commit waited for the standby is not sent when the
#    primary's postmaster dies during the wait (PostgreSQL then ends the
#    wait with the record on the primary only);
#  - promoted, the standby serves as the same member, verify_log() is clean
#    and the seal chain goes on;
#  - a standby made before the primary's key was rotated refuses to serve
#    once promoted, says why in its log, and serves once given the key;
#  - on the consumer, interop.query() returns no rows when its own primary
#    dies while its record waits for the standby's confirmation.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use InteropTest;

my $ca  = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $pop = new_node('population', $POP, $ca, allows_streaming => 1, 'interop.gateway_workers' => 1,
	'interop.seal_interval' => 0);
my $tax = new_node('tax', $TAX, $ca, allows_streaming => 1, 'interop.gateway_workers' => 0);
my $root = "$ca/fedroot/ca.crt";
$pop->safe_psql('postgres', qq{
	CREATE TABLE person (id text PRIMARY KEY, name text);
	INSERT INTO person VALUES ('P1', 'Ann'), ('P2', 'Bat');
	SELECT interop.publish('person', 'person', filter_columns => '{id}', subject_column => 'id');
	SELECT interop.grant_access('person', '$TAX', purposes => '{audit}');});
$tax->safe_psql('postgres', "SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}')");
ok(wait_for_gateway($pop, $root, $tax), 'the primary serves');

my $ask = qq{SELECT q->>'name' FROM interop.query('$POP', 'person', '{"id":"P1"}', 'audit') q};
is($tax->safe_psql('postgres', $ask), 'Ann', 'an exchange before the standby exists');

my $standby = new_standby($pop, 'standby');
$pop->wait_for_catchup('standby');

# ---- the standby: no workers, writes refused, reads work

like(slurp_file($standby->logfile), qr/LOG:  interop's workers start when this standby is promoted/,
	'the standby says once why no worker of interop runs');
is($standby->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'interop%'}),
	'0', 'no worker of interop runs on the standby');
isnt($pop->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'interop%'}),
	'0', '(they run on the primary)');

my %writes = (
	'interop.seal_log()'       => 'SELECT interop.seal_log()',
	'interop.prune_log()'      => q{SELECT interop.prune_log(now() - interval '1 year')},
	'interop.publish()'        => q{SELECT interop.publish('other', 'person')},
	'interop.grant_access()'   => qq{SELECT interop.grant_access('person', '$POP')},
	'interop.init_node()'      => qq{SELECT interop.init_node('$POP', overwrite => true)},
	'interop.add_peer()'       => qq{SELECT interop.add_peer('$TAX', 'https://127.0.0.1:1')},
	'interop.add_trust_anchor()' => qq{SELECT interop.add_trust_anchor(\$\$@{[slurp($root)]}\$\$)},
	'interop.grant_consent()'  => qq{SELECT interop.grant_consent('P1', '$TAX', 'person', 'audit')},
	'interop.query_async()'    => qq{SELECT interop.query_async('$POP', 'person')},
	'interop.query()'          => qq{SELECT * FROM interop.query('$POP', 'person', '{"id":"P1"}')});
for my $f (sort keys %writes)
{
	my ($rc, $out, $err) = $standby->psql('postgres', $writes{$f});
	like($err, qr/ERROR:  \Q$f\E cannot run on a standby\n.*HINT:  Run it on the primary/s,
		"$f refuses on the standby, with a hint");
}
is(slurp_file($pop->data_dir . '/interop/node.key'), slurp_file($standby->data_dir . '/interop/node.key'),
	'the refused init_node() left the standby\'s key file alone');

is($standby->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0',
	'verify_log() runs on the standby: nothing to report');
is($standby->safe_psql('postgres', q{SELECT count(*) > 0 FROM interop.subject_access_report('P1')}), 't',
	'subject_access_report() runs on the standby');
like($standby->safe_psql('postgres', q{SELECT interop.verify(interop.sign('{"a":1}'))}), qr/"a": 1/,
	'sign() and verify() run on the standby, with the node key');
like($standby->safe_psql('postgres', 'SELECT interop.certificate_request()'), qr/BEGIN CERTIFICATE REQUEST/,
	'so does certificate_request()');
is($standby->safe_psql('postgres', q{SELECT string_agg(name, ',') FROM interop.service}), 'person',
	'the tables can be read there');
is($standby->safe_psql('postgres', q{SELECT count(*) FROM interop.message_log WHERE peer::text = 'MN/GOV/2000002/tax'}),
	$pop->safe_psql('postgres', q{SELECT count(*) FROM interop.message_log WHERE peer::text = 'MN/GOV/2000002/tax'}),
	'the standby has the exchanges of the primary\'s log');

# ---- interop.require_synchronous_log

$pop->append_conf('postgresql.conf', "interop.require_synchronous_log = on\n");
$pop->reload;
sub health
{
	my ($n) = @_;
	my ($code, $body) = curl_gateway($n, '/v1/health', as => $tax);
	return "$code $body";
}
my $h;
for (1 .. 50) { $h = health($pop); last if $h =~ /^503/; usleep(100_000) }
like($h, qr/^503 .*"not_ready".*synchronous_standby_names is empty/,
	'require_synchronous_log without synchronous_standby_names: not ready, and why');
my $logged = $pop->safe_psql('postgres', 'SELECT count(*) FROM interop.message_log');
my ($rc, $out, $err) = $tax->psql('postgres', $ask);
like($err, qr/refused the request for service "person": not_durable\n.*synchronous_standby_names is empty/s, 'a query is refused with 503 not_durable');
is($pop->safe_psql('postgres', 'SELECT count(*) FROM interop.message_log'), $logged,
	'(not run, and not logged: its record could not have been made durable either)');

$tax->append_conf('postgresql.conf', "interop.require_synchronous_log = on\n");
$tax->reload;
($rc, $out, $err) = (0, '', '');
for (1 .. 50)
{
	($rc, $out, $err) = $tax->psql('postgres', $ask);
	last if $err =~ /would not be durable/;
	usleep(100_000);
}
like($err, qr/ERROR:  interop.query\(\) refused: its log record would not be durable on a standby\n.*HINT:  Start or reconnect the synchronous standby/s,
	'a consumer without a synchronous standby refuses to call');
set_setting($tax, 'interop.require_synchronous_log', 'off');

$pop->append_conf('postgresql.conf', "synchronous_standby_names = 'standby'\n");
$pop->reload;
ok($pop->poll_query_until('postgres', q{SELECT sync_state = 'sync' FROM pg_stat_replication WHERE application_name = 'standby'}),
	'the standby streams synchronously');
for (1 .. 50) { $h = health($pop); last if $h =~ /^200/; usleep(100_000) }
like($h, qr/^200 .*"ok"/, 'ready again');
my $n0 = $pop->safe_psql('postgres', 'SELECT count(*) FROM interop.message_log');
for (1 .. 5)
{
	is($tax->safe_psql('postgres', $ask), 'Ann', "exchange $_ with a synchronous standby");
}
my $n1 = $pop->safe_psql('postgres', 'SELECT count(*) FROM interop.message_log');
ok($n1 >= $n0 + 5, 'each is in the primary\'s log');
$pop->wait_for_catchup('standby');
is($standby->safe_psql('postgres', 'SELECT count(*) FROM interop.message_log'), $n1, 'and on the standby');

$standby->stop('fast');
for (1 .. 100) { $h = health($pop); last if $h =~ /^503/; usleep(100_000) }
like($h, qr/^503 .*0 of the 1 synchronous standbys that synchronous_standby_names \(\\"standby\\"\) asks for are streaming/,
	'the standby gone: not ready, and why');
my $t0 = time;
($rc, $out, $err) = $tax->psql('postgres', $ask);
like($err, qr/not_durable/, 'a query is refused at once, not left waiting on the commit');
ok(time - $t0 < 15, '(in ' . (time - $t0) . ' s)');
$standby->start;
ok($pop->poll_query_until('postgres', q{SELECT sync_state = 'sync' FROM pg_stat_replication WHERE application_name = 'standby'}),
	'the standby is back');
$pop->wait_for_catchup('standby');

# ---- promotion: the same member, the same log, the seal chain goes on

is($pop->safe_psql('postgres', 'SELECT interop.seal_log() > 0'), 't', 'the primary seals its log');
$pop->wait_for_catchup('standby');

# the primary dies while an answer waits for the standby's confirmation:
# PostgreSQL stops the commit's wait when its postmaster dies, with the
# record committed on the primary only; the answer must not leave
my $receiver = $standby->safe_psql('postgres', 'SELECT pid FROM pg_stat_wal_receiver');
kill 'STOP', $receiver;
my ($qout, $qerr) = ('', '');
my $call = IPC::Run::start([ 'psql', '-XAtq', '-d', $tax->connstr('postgres'), '-c', $ask ], '>', \$qout, '2>', \$qerr);
ok($pop->poll_query_until('postgres',
	q{SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'interop gateway' AND wait_event = 'SyncRep'}),
	'an answer waits for the standby that does not confirm');
$pop->kill9;
$call->finish;
isnt($qout, "Ann\n", 'when the primary dies, the answer committed there alone is not sent');
like($qerr, qr/not_durable|could not reach|connect/, '(the consumer gets an error: ' . ($qerr =~ s/\n.*//sr) . ')');
kill 'CONT', $receiver;
$standby->promote;
ok(wait_for_gateway($standby, $root, $tax), 'promoted, the standby\'s gateway serves');
my ($code, $body) = curl_gateway($standby, '/v1/health', as => $tax);
like($body, qr/"member":"\Q$POP\E"/, 'as the same member, with the key file the base backup copied');
$tax->safe_psql('postgres', "SELECT interop.remove_peer('$POP'); SELECT interop.add_peer('$POP', '@{[gateway_url($standby)]}')");
is($tax->safe_psql('postgres', $ask), 'Ann', 'the consumer is served by the new primary');
is($standby->safe_psql('postgres', 'SELECT interop.seal_log() > 0'), 't', 'the new primary seals what it logged');
is($standby->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0',
	'verify_log() is clean on the new primary: the sequence jump and the continued seal chain are no tampering');

# ---- a standby made before a key rotation refuses to serve once promoted

$standby->append_conf('postgresql.conf', "synchronous_standby_names = ''\ninterop.require_synchronous_log = off\n");
$standby->reload;
my $late = new_standby($standby, 'late');
$standby->wait_for_catchup('late');
$standby->safe_psql('postgres', "SELECT interop.init_node('$POP', overwrite => true)");
my $csr = $standby->safe_psql('postgres', 'SELECT interop.certificate_request()');
spew("$ca/rotated.csr", "$csr\n");
sh("$TESTCA sign $ca issuing $ca/rotated.csr $ca/rotated.crt");
my $chain = sh("$TESTCA chain $ca issuing $ca/rotated.crt");
$standby->safe_psql('postgres', "SELECT interop.install_certificate(\$\$$chain\$\$)");
$standby->wait_for_catchup('late');
$standby->stop('immediate');
$late->promote;
my $offset = 0;
ok($late->wait_for_log(qr/interop gateway is waiting: the node key file is not the key of interop.node/, $offset),
	'the late standby, promoted, does not serve with the old key, and its log says why');
($code) = curl_gateway($late, '/v1/health', as => $tax);
isnt($code, '200', '(its gateway does not answer)');
($rc, $out, $err) = $late->psql('postgres', q{SELECT interop.sign('{"a":1}')});
like($err, qr/ERROR:  the node key file is not the key of interop.node\n.*HINT:  Copy the key file from the server where interop.init_node\(\) last ran/s,
	'nor does it sign, with a hint');
spew(node_key_file($late), slurp(node_key_file($standby)));
chmod 0600, node_key_file($late);
$late->restart;
$late->{interop_chain} = "$ca/rotated.chain";
spew("$ca/rotated.chain", $chain);
ok(wait_for_gateway($late, $root, $tax), 'given the rotated key file, it serves');
$tax->safe_psql('postgres', "SELECT interop.remove_peer('$POP'); SELECT interop.add_peer('$POP', '@{[gateway_url($late)]}')");
is($tax->safe_psql('postgres', $ask), 'Ann', 'as the member, with the new key');
is($late->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0', 'verify_log() is clean there too');

# ---- the consumer's side: its record must be durable before the rows return

my $taxstandby = new_standby($tax, 'taxstandby');
$tax->append_conf('postgresql.conf', "synchronous_standby_names = 'taxstandby'\ninterop.require_synchronous_log = on\n");
$tax->reload;
ok($tax->poll_query_until('postgres', q{SELECT sync_state = 'sync' FROM pg_stat_replication WHERE application_name = 'taxstandby'}),
	'the consumer has a synchronous standby');
for (1 .. 50) { ($rc, $out, $err) = $tax->psql('postgres', $ask); last if $out eq 'Ann'; usleep(100_000) }
is($out, 'Ann', 'the consumer calls, its record confirmed by its standby');
$receiver = $taxstandby->safe_psql('postgres', 'SELECT pid FROM pg_stat_wal_receiver');
kill 'STOP', $receiver;
($qout, $qerr) = ('', '');
$call = IPC::Run::start([ 'psql', '-XAtq', '-d', $tax->connstr('postgres'), '-c', $ask ], '>', \$qout, '2>', \$qerr);
ok($tax->poll_query_until('postgres',
	q{SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'interop log writer' AND wait_event = 'SyncRep'}),
	'the consumer\'s record waits for its standby that does not confirm');
$tax->kill9;
$call->finish;
isnt($qout, "Ann\n", 'when the consumer\'s primary dies, interop.query() returns no rows');
# (the backend may see its postmaster gone first and end the session, or
# get the log writer's refusal first; either way no rows)
like($qerr, qr/no synchronous standby confirmed it|connection to server was lost/,
	'but an error: ' . ($qerr =~ s/\n.*//sr));
kill 'CONT', $receiver;

done_testing();
