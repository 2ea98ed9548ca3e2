# 010_definer.pl: code that a non-superuser defines runs with its owner's
# privileges at most, across the network too.  Proves that
#  - a domain CHECK on a published filter column runs as the publisher when
#    another agency's request binds a value to it (it ran as the bootstrap
#    superuser before 0.2.0, so a granted request made its author superuser);
#  - a row-level security policy of the published table, and a trigger on a
#    subscription's target, run as the publisher and the subscriber;
#  - the workers refuse to run while interop_worker is a superuser, and serve
#    again when it is not;
#  - a provider's catalog is hostile input for import_service(): a column
#    name made of SQL runs nothing on the consumer (it made the consumer's
#    DBA run a shell command before 0.2.0), a legal name with a space
#    imports and works, and a type name that the consumer also has as a
#    domain of its own arrives as text, not as that domain.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use InteropTest;

my $ca = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $pop = new_node('population', $POP, $ca, 'interop.seal_interval' => 0);
my $tax = new_node('tax', $TAX, $ca, 'interop.gateway_workers' => 0, 'interop.seal_interval' => 0);

# the trap: on either node, records who ran it and tries to promote mallory
my $trap = q{
	CREATE ROLE regress_mallory LOGIN IN ROLE interop_admin, interop_user;
	CREATE SCHEMA mal AUTHORIZATION regress_mallory;
	CREATE TABLE mal.seen (at text, role name, superuser bool);
	GRANT INSERT, SELECT ON mal.seen TO PUBLIC;
	GRANT USAGE ON SCHEMA mal TO PUBLIC;
	SET ROLE regress_mallory;
	CREATE FUNCTION mal.trap(at text) RETURNS bool LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO mal.seen SELECT at, current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
		BEGIN
			ALTER ROLE regress_mallory SUPERUSER;
		EXCEPTION WHEN insufficient_privilege THEN
			NULL;
		END;
		RETURN true;
	END $$;
	GRANT EXECUTE ON FUNCTION mal.trap(text) TO PUBLIC;
	RESET ROLE;
};
$pop->safe_psql('postgres', $trap);
$tax->safe_psql('postgres', $trap);

sub seen
{
	my ($node, $at) = @_;
	return $node->safe_psql('postgres',
		"SELECT coalesce(string_agg(DISTINCT role || CASE WHEN superuser THEN ' (superuser)' ELSE '' END, ','), 'none') FROM mal.seen WHERE at = '$at'");
}
sub mallory_super
{
	return $_[0]->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_mallory'");
}

# ---- the provider: a domain CHECK and an RLS policy of the publisher's ----
$pop->safe_psql('postgres', qq{
	SET ROLE regress_mallory;
	CREATE DOMAIN mal.code AS text CHECK (mal.trap('domain') AND VALUE ~ '^P[0-9]+\$');
	CREATE TABLE mal.person (id mal.code PRIMARY KEY, name text);
	INSERT INTO mal.person VALUES ('P1', 'one'), ('P2', 'two');
	ALTER TABLE mal.person ENABLE ROW LEVEL SECURITY;
	ALTER TABLE mal.person FORCE ROW LEVEL SECURITY;
	CREATE POLICY visible ON mal.person FOR SELECT USING (mal.trap('policy'));
	SELECT interop.publish('person', 'mal.person', filter_columns => '{id}', track_changes => true);
	SELECT interop.grant_access('person', '$TAX');
	RESET ROLE;
	TRUNCATE mal.seen;
});
$tax->safe_psql('postgres', "SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}')");
ok(wait_for_gateway($pop, "$ca/fedroot/ca.crt", $tax), 'the provider gateway is up');

is($tax->safe_psql('postgres', q{SELECT q->>'name' FROM interop.query('MN/GOV/1000001/population', 'person', '{"id": "P2"}') q}),
	'two', 'a request filtering on the domain column is answered');
is(seen($pop, 'domain'), 'regress_mallory', 'the domain CHECK ran as the publisher, not as a superuser');
is(seen($pop, 'policy'), 'regress_mallory', 'the row-level security policy ran as the publisher');
is(mallory_super($pop), 'f', 'the publisher did not become superuser');

my ($ret, $out, $err) = $tax->psql('postgres',
	q{SELECT * FROM interop.query('MN/GOV/1000001/population', 'person', '{"id": "X1"}')});
like($err, qr/refused.*bad_request.*invalid value for "id".*violates check constraint/s,
	'a value the domain refuses is a signed 400 bad_request naming the constraint');

# ---- a trigger on the subscription's target runs as the subscriber ----
$tax->safe_psql('postgres', q{
	CREATE ROLE regress_copier IN ROLE interop_user;
	CREATE TABLE person_copy (id text PRIMARY KEY, name text);
	ALTER TABLE person_copy OWNER TO regress_copier;
	CREATE FUNCTION mal.on_copy() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN PERFORM mal.trap('apply'); RETURN NEW; END $$;
	ALTER FUNCTION mal.on_copy() OWNER TO regress_mallory;
	CREATE TRIGGER on_copy BEFORE INSERT OR UPDATE ON person_copy FOR EACH ROW EXECUTE FUNCTION mal.on_copy();
	SET ROLE regress_copier;
	SELECT interop.subscribe('MN/GOV/1000001/population', 'person', 'person_copy', every => '100 ms');
	RESET ROLE;
});
my $deadline = time() + 60;
usleep(200_000) while time() < $deadline && $tax->safe_psql('postgres', 'SELECT count(*) FROM person_copy') ne '2';
is($tax->safe_psql('postgres', 'SELECT count(*) FROM person_copy'), '2', 'the subscription copied the rows');
is(seen($tax, 'apply'), 'regress_copier', 'the target\'s trigger ran as the subscriber');
is(mallory_super($tax), 'f', 'nobody became superuser on the consumer');

# ---- the workers refuse to run as a superuser role ----
$pop->safe_psql('postgres', 'ALTER ROLE interop_worker SUPERUSER');
my ($code) = curl_gateway($pop, '/v1/health', as => $tax);
is($code, '503', 'with interop_worker a superuser, the gateway answers 503');
($code, my $body) = curl_gateway($pop, '/v1/catalog', as => $tax);
is($code, '500', '... and serves nothing');
ok($pop->wait_for_log(qr/role "interop_worker" must not be a superuser/), 'the server log says why');
$pop->safe_psql('postgres', 'ALTER ROLE interop_worker NOSUPERUSER');
($code) = curl_gateway($pop, '/v1/health', as => $tax);
is($code, '200', 'it serves again once interop_worker is not a superuser');

# ---- import_service: the provider's catalog is hostile input ----
# COPY TO PROGRAM runs in the consumer's data directory; the name fits NAMEDATALEN
my $marker = $tax->data_dir . '/pw';
my $evil = "x text,text)IS'';COPY\t(SELECT\t1)\tTO\tPROGRAM\t'id>pw';--";
(my $evil_sql = $evil) =~ s/"/""/g;
$pop->safe_psql('postgres', qq{
	CREATE SCHEMA reg;
	CREATE DOMAIN reg.grade AS int CHECK (VALUE BETWEEN 1 AND 5);
	CREATE TABLE reg.hostile ("$evil_sql" text, "first name" text, grade reg.grade, n int);
	INSERT INTO reg.hostile VALUES ('a', 'Bat', 3, 1), ('b', 'Dorj', 4, 2);
	SELECT interop.publish('hostile', 'reg.hostile', filter_columns => ARRAY[\$q\$$evil\$q\$]);
	SELECT interop.grant_access('hostile', '$TAX');
	SELECT interop.publish('spaced', 'reg.hostile', filter_columns => '{first name}');
	SELECT interop.grant_access('spaced', '$TAX');
});
# the consumer has a domain of the same name as the provider's type, with a trap
$tax->safe_psql('postgres', q{
	CREATE SCHEMA reg;
	CREATE DOMAIN reg.grade AS int CHECK (mal.trap('consumer domain'));
	CREATE SCHEMA imported;
});
($ret, $out, $err) = $tax->psql('postgres',
	"SELECT interop.import_service('$POP', 'hostile', 'imported')::text");
is($ret, 0, 'a catalog with a column name made of SQL imports') or diag($err);
ok(!-e $marker, 'and runs none of it on the consumer');
like($out, qr/^imported\.hostile\(/, 'import_service returns the function it made');
is($tax->safe_psql('postgres', "SELECT interop.import_service('$POP', 'spaced', 'imported')::text"),
	'imported.spaced(text,text)', 'a filter column whose name has a space imports');
is($tax->safe_psql('postgres', q{
	SELECT "first name" || ':' || grade || ':' || pg_typeof(grade) || ':' || n
	FROM imported.spaced("first name" => 'Dorj')}),
	'Dorj:4:text:2', 'a filter named "first name" works; a type the consumer has as its own domain arrives as text');
is(seen($tax, 'consumer domain'), 'none', 'the consumer\'s same-named domain was not used');
is($tax->safe_psql('postgres', q{SELECT obj_description('imported.hostile'::regproc, 'pg_proc')}),
	"service hostile of $POP (imported by interop.import_service)", 'the function carries its comment');

done_testing();
