# 011_restore.pl: a plain pg_dump and pg_restore, done as docs/operations.md
# says, gives the node back as it was.  Proves, comparing every row:
#  - services keep their publisher as owner (a restore made the restoring
#    superuser the owner of every service before 0.2.0, so a restored
#    service ran as superuser and bypassed row-level security), grants keep
#    their author, and the admin history is neither added to nor refused;
#  - node_key keeps every key the node had, so seals made before a key
#    rotation verify (a restore lost the old key, and verify_log() raised a
#    false alarm before 0.2.0);
#  - consent, consent_log, message_log and log_seal come back identical,
#    and verify_log() is clean on the restored node;
#  - the restored node answers a consumer as the same member, with the
#    publisher's privileges (its row-level security still applies), and
#    serves a new subscription to its tracked service.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Copy qw(copy);
use Time::HiRes qw(usleep);
use InteropTest;

my $ca = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $pop = new_node('population', $POP, $ca, 'interop.seal_interval' => 0);
my $tax = new_node('tax', $TAX, $ca, 'interop.gateway_workers' => 0, 'interop.seal_interval' => 0);
my $root = slurp("$ca/fedroot/ca.crt");

# a publisher who is not a superuser, and row-level security that limits it
$pop->safe_psql('postgres', qq{
	CREATE ROLE regress_publisher IN ROLE interop_admin;
	CREATE SCHEMA reg AUTHORIZATION regress_publisher;
	CREATE TABLE reg.person (id text PRIMARY KEY, name text, district text);
	INSERT INTO reg.person SELECT 'P' || i, 'Person ' || i, CASE WHEN i % 2 = 0 THEN 'north' ELSE 'south' END
	FROM generate_series(1, 20) i;
	ALTER TABLE reg.person OWNER TO regress_publisher;
	ALTER TABLE reg.person ENABLE ROW LEVEL SECURITY;
	ALTER TABLE reg.person FORCE ROW LEVEL SECURITY;
	CREATE POLICY north_only ON reg.person FOR SELECT USING (district = 'north');
	SET ROLE regress_publisher;
	SELECT interop.publish('person', 'reg.person', filter_columns => '{district}', max_rows => 100, track_changes => true);
	SELECT interop.grant_access('person', '$TAX', purposes => '{statistics}', legal_basis => 'Statistics Act, art. 4');
	SELECT interop.publish('person', 'reg.person', filter_columns => '{district}', max_rows => 50, track_changes => true);
	SELECT interop.grant_access('person', '$TAX', purposes => '{statistics,planning}', legal_basis => 'Statistics Act, art. 4');
	RESET ROLE;
	SELECT interop.grant_consent('P2', '$TAX', 'person', 'statistics');
	SELECT interop.revoke_consent(interop.grant_consent('P4', '$TAX', 'person', 'statistics'));
});
$tax->safe_psql('postgres', "SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}')");
ok(wait_for_gateway($pop, "$ca/fedroot/ca.crt", $tax), 'the provider gateway is up');

my $ask = q{SELECT string_agg(q->>'id', ',' ORDER BY q->>'id') FROM interop.query('MN/GOV/1000001/population', 'person', '{"district": "south"}', 'statistics') q};
my $ask_north = q{SELECT count(*) FROM interop.query('MN/GOV/1000001/population', 'person', '{"district": "north"}', 'statistics') q};
is($tax->safe_psql('postgres', $ask), '', 'row-level security hides the south from the publisher');
is($tax->safe_psql('postgres', $ask_north), '10', 'the north is answered');
$tax->safe_psql('postgres', $ask_north) for 1 .. 5;
$pop->safe_psql('postgres', 'SELECT interop.seal_log()');

# a key rotation: seals before it are signed by the old key
$pop->safe_psql('postgres', "SELECT interop.init_node('$POP', overwrite => true)");
my $csr = $pop->safe_psql('postgres', 'SELECT interop.certificate_request()');
spew("$ca/rotated.csr", "$csr\n");
sh("$TESTCA sign $ca issuing $ca/rotated.csr $ca/rotated.crt");
my $chain = sh("$TESTCA chain $ca issuing $ca/rotated.crt");
$pop->safe_psql('postgres', "SELECT interop.install_certificate(\$\$$chain\$\$)");
$pop->restart;
ok(wait_for_gateway($pop, "$ca/fedroot/ca.crt", $tax), 'the provider gateway is up with the new key');
$tax->safe_psql('postgres', $ask_north) for 1 .. 3;
$pop->safe_psql('postgres', 'SELECT interop.seal_log()');
is($pop->safe_psql('postgres', 'SELECT count(*) FROM interop.node_key'), '2', 'the node has had two keys');
is($pop->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0', 'verify_log() is clean before the dump');

# ---- dump, as docs/operations.md says: roles, then the database; the key file beside ----
my $tmp = PostgreSQL::Test::Utils::tempdir();
my @conn = ('-h', $pop->host, '-p', $pop->port);
IPC::Run::run(['pg_dumpall', @conn, '--globals-only', '-f', "$tmp/globals.sql"]) or die 'pg_dumpall failed';
IPC::Run::run(['pg_dump', @conn, '-Fc', '-d', 'postgres', '-f', "$tmp/postgres.dump"]) or die 'pg_dump failed';

my %tables = (
	service       => 'name',
	access_grant  => 'service, consumer',
	admin_history => 'id',
	node_key      => 'public_key',
	node          => 'singleton',
	consent       => 'id',
	consent_log   => 'id',
	message_log   => 'id',
	log_seal      => 'id',
	peer          => 'member_id',
	trust_anchor  => 'fingerprint');
sub rows
{
	my ($node, $table) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY $tables{$table})), '') FROM interop.$table t");
}
my %before = map { $_ => rows($pop, $_) } keys %tables;

# ---- restore into a new cluster ----
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $new = PostgreSQL::Test::Cluster->new('restored');
$new->init;
$new->append_conf('postgresql.conf', join("\n",
	"shared_preload_libraries = 'interop'", "interop.port = $port",
	"interop.listen_addresses = '127.0.0.1'", 'interop.seal_interval = 0', ''));
mkdir $new->data_dir . '/interop';
copy(node_key_file($pop), $new->data_dir . '/interop/node.key') or die "copy: $!";
chmod 0600, $new->data_dir . '/interop/node.key';
$new->start;
my @nconn = ('-h', $new->host, '-p', $new->port);
my ($out, $err);
IPC::Run::run(['psql', @nconn, '-X', '-q', '-d', 'postgres', '-f', "$tmp/globals.sql"], '>', \$out, '2>', \$err);
IPC::Run::run(['pg_restore', @nconn, '-d', 'postgres', "$tmp/postgres.dump"], '>', \$out, '2>', \$err);
is($err, '', 'pg_restore reports no error');

for my $t (sort keys %tables)
{
	is(rows($new, $t), $before{$t}, "interop.$t is restored row for row");
}
is($new->safe_psql('postgres', 'SELECT owner FROM interop.service'), 'regress_publisher',
	'the service keeps its publisher as owner');
is($new->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0',
	'verify_log() is clean on the restored node, seals of both keys included');

# the restored node serves as the same member, with the publisher's privileges
$new->{interop_port} = $port;
$tax->safe_psql('postgres', "SELECT interop.add_peer('$POP', '@{[gateway_url($new)]}')");
ok(wait_for_gateway($new, "$ca/fedroot/ca.crt", $tax), 'the restored gateway is up');
is($tax->safe_psql('postgres', $ask), '', 'row-level security still hides the south');
is($tax->safe_psql('postgres', $ask_north), '10', 'the north is answered by the restored node');
is($new->safe_psql('postgres', 'SELECT count(*) FROM interop.verify_log()'), '0', 'verify_log() stays clean');

# a new subscription to the restored node's tracked service
$tax->safe_psql('postgres', q{
	CREATE TABLE person_copy (id text PRIMARY KEY, name text, district text);
	SELECT interop.subscribe('MN/GOV/1000001/population', 'person', 'person_copy', 'statistics', '100 ms');
});
$new->safe_psql('postgres', "INSERT INTO reg.person VALUES ('P99', 'New', 'north')");
my $deadline = time() + 60;
usleep(200_000) while time() < $deadline && $tax->safe_psql('postgres', 'SELECT count(*) FROM person_copy') ne '11';
is($tax->safe_psql('postgres', 'SELECT count(*) FROM person_copy'), '11',
	'a subscription to the restored node copies, then follows its changes');

done_testing();
