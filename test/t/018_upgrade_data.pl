# 018_upgrade_data.pl: two 0.1.0 nodes with data in every table, updated to
# the current version as a DBA would (new library, restart, ALTER EXTENSION
# interop UPDATE).  Proves that
#  - the rows of every table are as they were (the columns 0.1.0 had);
#  - verify_log() is clean on both, over seals made by 0.1.0;
#  - exchanges go on, the asynchronous request that was pending is
#    delivered, the done and failed ones keep their state, and the
#    subscription caught mid-copy finishes and equals its source.
# The 0.1.0 library is built from the release commit (660ef52) into the
# test's directory and found first through dynamic_library_path, its
# functions named by the bare library name; the update points them back at
# $libdir/interop, which is what replacing the installed file does.  0.1.0
# was released for PostgreSQL 15 only.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use InteropTest;

my $RELEASE = '660ef52';
my $pg_config = $ENV{PG_CONFIG} // 'pg_config';
my $major = `$pg_config --version` =~ /PostgreSQL (\d+)/ ? $1 : 0;
plan skip_all => "0.1.0 was released for PostgreSQL 15 only (this is $major)" if $major != 15;
plan skip_all => "the release commit $RELEASE is not in this clone's history"
  if system("git -C '$TOP' cat-file -e $RELEASE^{commit} 2>/dev/null") != 0;

# the 0.1.0 library, from its release commit
my $old = PostgreSQL::Test::Utils::tempdir();
sh("git -C '$TOP' archive $RELEASE | tar -x -C '$old' && make -s -C '$old' PG_CONFIG='$pg_config' >/dev/null 2>&1");
ok(-f "$old/interop.so", "the 0.1.0 library is built from $RELEASE");

my $ca  = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';

# a node of 0.1.0: its library first on the path, its functions by bare name
sub old_node
{
	my ($name, $member, %conf) = @_;
	my $n = PostgreSQL::Test::Cluster->new($name);
	$n->init;
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	$n->{interop_port} = $port;
	# the extension is created before the 0.1.0 library is preloaded: one
	# backend must not load both
	$n->append_conf('postgresql.conf', join("\n",
		"dynamic_library_path = '$old:\$libdir'",
		"interop.port = $port",
		"interop.listen_addresses = '127.0.0.1'",
		"interop.seal_interval = 0",
		map { "$_ = $conf{$_}" } sort keys %conf) . "\n");
	$n->start;
	$n->safe_psql('postgres', q{
		SET check_function_bodies = off;
		CREATE EXTENSION interop VERSION '0.1.0';
		UPDATE pg_proc SET probin = 'interop' WHERE probin = '$libdir/interop';});
	$n->append_conf('postgresql.conf', "shared_preload_libraries = 'interop'\n");
	$n->restart;
	$n->safe_psql('postgres', "SELECT interop.init_node('$member')");
	spew("$ca/$name.csr", $n->safe_psql('postgres', 'SELECT interop.certificate_request()') . "\n");
	sh("$TESTCA sign $ca issuing $ca/$name.csr $ca/$name.crt");
	my $chain = sh("$TESTCA chain $ca issuing $ca/$name.crt");
	spew("$ca/$name.chain", $chain);
	$n->{interop_chain} = "$ca/$name.chain";
	$n->safe_psql('postgres', "SELECT interop.add_trust_anchor(\$\$@{[slurp(\"$ca/fedroot/ca.crt\")]}\$\$)");
	$n->safe_psql('postgres', "SELECT interop.install_certificate(\$\$$chain\$\$)");
	return $n;
}

my $pop = old_node('population', $POP);
my $tax = old_node('tax', $TAX, 'interop.gateway_workers' => 0, 'interop.sync_interval' => "'1s'");
is($pop->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'interop'"), '0.1.0', 'the nodes run 0.1.0');

# ---- data in every table, with 0.1.0 ----
$pop->safe_psql('postgres', qq{
	CREATE TABLE person (id text PRIMARY KEY, name text NOT NULL, city text);
	INSERT INTO person SELECT 'P' || i, 'Person ' || i, 'City ' || (i % 7) FROM generate_series(1, 20000) i;
	SELECT interop.publish('person', 'person', filter_columns => '{id}', subject_column => 'id',
	                       max_rows => 20, track_changes => true);
	SELECT interop.grant_access('person', '$TAX', purposes => '{tax assessment}', legal_basis => 'Tax Act §5');
	CREATE VIEW income AS SELECT id, 1000 + length(name) AS amount FROM person;
	SELECT interop.publish('income', 'income', filter_columns => '{id}', subject_column => 'id', requires_consent => true);
	SELECT interop.grant_access('income', '$TAX');
	SELECT interop.grant_consent('P5', '$TAX', 'income', 'tax assessment', evidence => 'signed form 17');
});
$tax->safe_psql('postgres', qq{
	SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}');
	CREATE TABLE person_copy (id text PRIMARY KEY, name text NOT NULL, city text);
});
ok(wait_for_gateway($pop, "$ca/fedroot/ca.crt", $tax), 'the provider gateway is up');
my (undef, $health) = curl_gateway($pop, '/v1/health', as => $tax);
like($health, qr/"version":"0\.1\.0"/, '... and it is the 0.1.0 library\'s');
my $ask = qq{SELECT q->>'name' FROM interop.query('$POP', 'person', '{"id":"P1"}', 'tax assessment') q};
is($tax->safe_psql('postgres', $ask), 'Person 1', 'an exchange on 0.1.0');
is($tax->safe_psql('postgres', qq{SELECT q->>'amount' FROM interop.query('$POP', 'income', '{"id":"P5"}', 'tax assessment') q}),
	'1008', 'an exchange with consent on 0.1.0');
my $done = $tax->safe_psql('postgres', qq{SELECT interop.query_async('$POP', 'person', '{"id":"P2"}', 'tax assessment')});
is($tax->safe_psql('postgres', "SELECT interop.wait($done, '60 s')"), 'done', 'an asynchronous request done');
my $failed = $tax->safe_psql('postgres', qq{SELECT interop.query_async('$POP', 'no_such_service', '{}')});
is($tax->safe_psql('postgres', "SELECT interop.wait($failed, '60 s')"), 'failed', 'one failed');
$pop->safe_psql('postgres', 'SELECT interop.seal_log()');
$tax->safe_psql('postgres', 'SELECT interop.seal_log()');
is($pop->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0', 'the provider\'s log verifies on 0.1.0');

# a subscription, stopped in the middle of its copy
$tax->safe_psql('postgres', qq{SELECT interop.subscribe('$POP', 'person', 'person_copy', 'tax assessment', '1 s')});
ok($tax->poll_query_until('postgres', q{SELECT phase = 'copy' AND rows_copied > 0 FROM interop.stat_subscription}),
	'the subscription is copying');
$pop->stop('immediate');
my $pending = $tax->safe_psql('postgres', qq{SELECT interop.query_async('$POP', 'person', '{"id":"P3"}', 'tax assessment')});
sleep 2;
is($tax->safe_psql('postgres', "SELECT state FROM interop.async_request WHERE id = $pending"), 'pending',
	'one pending while the provider is down');
my $copied = $tax->safe_psql('postgres', 'SELECT rows_copied FROM interop.subscription');
ok($copied > 0 && $copied < 20000, "the copy stopped part way ($copied of 20000 rows)");

# every row of every table, as the columns 0.1.0 had; of the logs, the
# records up to the newest one at the first look (later ones are new)
my %append_only = map { $_ => 1 } qw(message_log consent_log log_seal admin_history);

sub snapshot
{
	my ($n, $cols, $upto) = @_;
	my %out;
	for my $t (sort keys %$cols)
	{
		my $list = join(', ', map { qq{"$_"} } @{ $cols->{$t} });
		if ($append_only{$t} && !defined $upto->{$t})
		{
			$upto->{$t} = $n->safe_psql('postgres', "SELECT coalesce(max(id), 0) FROM interop.$t");
		}
		my $where = $append_only{$t} ? "WHERE id <= $upto->{$t}" : '';
		$out{$t} = $n->safe_psql('postgres', "SELECT count(*) || ' ' || coalesce(md5(string_agg(r, E'\\n' ORDER BY r)), '')
			FROM (SELECT ROW($list)::text AS r FROM interop.$t $where) s");
	}
	return \%out;
}

sub columns_of
{
	my ($n) = @_;
	my %cols;
	for my $line (split /\n/, $n->safe_psql('postgres', q{
		SELECT c.relname || ' ' || string_agg(a.attname, ' ' ORDER BY a.attnum)
		FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE c.relnamespace = 'interop'::regnamespace AND c.relkind = 'r'
		  AND c.relname NOT IN ('async_request', 'subscription', 'peer_catalog')  -- they move on: checked below
		GROUP BY c.relname}))
	{
		my ($t, @c) = split / /, $line;
		$cols{$t} = \@c;
	}
	return \%cols;
}

# the consumer while the provider is down, then the provider alone
my (%cols, %before, %upto);
$cols{tax}   = columns_of($tax);
$before{tax} = snapshot($tax, $cols{tax}, $upto{tax} = {});
$tax->stop('fast');
$pop->start;
$cols{pop}   = columns_of($pop);
$before{pop} = snapshot($pop, $cols{pop}, $upto{pop} = {});
$pop->stop('fast');
ok(scalar(keys %{ $cols{pop} }) >= 15, 'every table of 0.1.0 is described (' . scalar(keys %{ $cols{pop} }) . ')');
my $rows = 0;
$rows += (split / /, $_)[0] for values %{ $before{pop} }, values %{ $before{tax} };
ok($rows > 20, "with rows in them ($rows)");

# ---- the update: the new library, a restart, ALTER EXTENSION ----
for my $n ($pop, $tax)
{
	$n->append_conf('postgresql.conf', "dynamic_library_path = '\$libdir'\n");
	$n->start;
	$n->safe_psql('postgres', q{
		UPDATE pg_proc SET probin = '$libdir/interop' WHERE probin = 'interop';
		ALTER EXTENSION interop UPDATE;});
	# the workers found no interop_worker role before the update: start them afresh
	$n->restart;
}
is($pop->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'interop'"),
	$pop->safe_psql('postgres', "SELECT default_version FROM pg_available_extensions WHERE name = 'interop'"),
	'the nodes run the current version');

# data intact
for my $side (qw(pop tax))
{
	my $n = $side eq 'pop' ? $pop : $tax;
	my $after = snapshot($n, $cols{$side}, $upto{$side});
	my @changed = grep { $after->{$_} ne $before{$side}{$_} } sort keys %$after;
	is("@changed", '', "$side: every row of every table is as it was");
}
is($pop->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0', 'the provider\'s log verifies');
is($tax->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0', 'the consumer\'s log verifies');

# and it goes on
ok(wait_for_gateway($pop, "$ca/fedroot/ca.crt", $tax), 'the provider gateway serves again');
is($tax->safe_psql('postgres', $ask), 'Person 1', 'exchanges go on');
is($tax->safe_psql('postgres', "SELECT interop.wait($pending, '60 s')"), 'done', 'the pending request is delivered');
is($tax->safe_psql('postgres', "SELECT r->>'name' FROM interop.result($pending) r"), 'Person 3', '... with its answer');
is($tax->safe_psql('postgres', "SELECT state FROM interop.async_request WHERE id IN ($done, $failed) ORDER BY id"),
	"done\nfailed", 'the done and the failed one keep their state');
is($tax->safe_psql('postgres', "SELECT r->>'name' FROM interop.result($done) r"), 'Person 2', '... and the done one its answer');
ok($tax->poll_query_until('postgres', q{SELECT phase = 'sync' FROM interop.stat_subscription}),
	'the subscription stopped mid-copy finishes its copy');
my $source = $pop->safe_psql('postgres', q{SELECT count(*) || ' ' || md5(string_agg(p::text, ',' ORDER BY id)) FROM person p});
is($tax->safe_psql('postgres', q{SELECT count(*) || ' ' || md5(string_agg(p::text, ',' ORDER BY id)) FROM person_copy p}),
	$source, '... and its copy equals the source, every row');
$pop->safe_psql('postgres', q{UPDATE person SET city = 'Tallinn' WHERE id = 'P9'});
ok($tax->poll_query_until('postgres', q{SELECT city = 'Tallinn' FROM person_copy WHERE id = 'P9'}),
	'changes after the update arrive');

done_testing();
