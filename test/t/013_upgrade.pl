# 013_upgrade.pl: ALTER EXTENSION interop UPDATE gives exactly the extension
# that a fresh CREATE EXTENSION gives.  Proves that
#  - the released 0.1.0 install script still installs;
#  - the chain of upgrade scripts takes it to the current version;
#  - every object of the updated extension (tables with their columns,
#    defaults, constraints, indexes, triggers, storage and privileges;
#    functions with their bodies, attributes and privileges; types,
#    operators, casts, views, event triggers, comments, the tables pg_dump
#    keeps, the roles) is the same as in a fresh install: a change
#    forgotten in an upgrade script fails here, naming the object.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use InteropTest;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'interop'\ninterop.gateway_workers = 0");
$node->start;

my $current = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'interop'");
my @released = split /\n/, $node->safe_psql('postgres',
	"SELECT version FROM pg_available_extension_versions WHERE name = 'interop' AND version <> '$current' ORDER BY version");
ok(scalar(@released) >= 1, "released versions are installable next to $current: @released");
my @meta = slurp("$TOP/META.json") =~ /"version"\s*:\s*"([^"]+)"/g;
is("$meta[0] $meta[1]", "$current $current", 'META.json (PGXN) names the same version as interop.control');

# One line per property of every member object of the extension, sorted.
my $describe = q{
-- privileges are compared as sets: GRANTs in another order give the same rights
CREATE FUNCTION pg_temp.acl(a aclitem[]) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT string_agg(i::text, ',' ORDER BY i::text) FROM unnest(a) i $$;
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'interop'),

members AS (
	SELECT d.classid, d.objid FROM pg_depend d, ext
	WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
rels AS (SELECT c.* FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid),
procs AS (SELECT p.* FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid),
lines(line) AS (
	SELECT 'object ' || pg_describe_object(classid, objid, 0) FROM members
	UNION ALL
	SELECT format('relation %s kind %s acl %s options %s', c.oid::regclass, c.relkind, pg_temp.acl(c.relacl), c.reloptions)
	FROM rels c
	UNION ALL
	SELECT format('column %s.%s #%s %s notnull=%s default=%s identity=%s generated=%s storage=%s',
				  c.oid::regclass, a.attname,
				  (SELECT count(*) FROM pg_attribute b WHERE b.attrelid = a.attrelid AND b.attnum > 0
				     AND NOT b.attisdropped AND b.attnum <= a.attnum),
				  format_type(a.atttypid, a.atttypmod), a.attnotnull,
				  pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated, a.attstorage)
	FROM rels c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
	UNION ALL
	SELECT format('constraint %s %s: %s', co.conrelid::regclass, co.conname, pg_get_constraintdef(co.oid))
	FROM pg_constraint co JOIN rels c ON c.oid = co.conrelid
	UNION ALL
	SELECT format('index %s', pg_get_indexdef(i.indexrelid)) FROM pg_index i JOIN rels c ON c.oid = i.indrelid
	UNION ALL
	SELECT format('trigger %s', pg_get_triggerdef(t.oid)) FROM pg_trigger t JOIN rels c ON c.oid = t.tgrelid
	WHERE NOT t.tgisinternal
	UNION ALL
	SELECT format('view %s: %s', c.oid::regclass, pg_get_viewdef(c.oid)) FROM rels c WHERE c.relkind = 'v'
	UNION ALL
	SELECT format('sequence %s %s %s %s', s.seqrelid::regclass, s.seqtypid::regtype, s.seqincrement, s.seqcache)
	FROM pg_sequence s JOIN rels c ON c.oid = s.seqrelid
	UNION ALL
	SELECT format('function %s acl %s: %s', p.oid::regprocedure, pg_temp.acl(p.proacl),
				  CASE WHEN p.prokind IN ('f', 'p', 'w') THEN pg_get_functiondef(p.oid) ELSE p.prokind::text END)
	FROM procs p
	UNION ALL
	SELECT format('comment %s: %s', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description)
	FROM pg_description d JOIN members m ON m.classid = d.classoid AND m.objid = d.objoid
	UNION ALL
	SELECT format('comment on role %s: %s', r.rolname, shobj_description(r.oid, 'pg_authid'))
	FROM pg_roles r WHERE r.rolname LIKE 'interop%'
	UNION ALL
	SELECT format('role %s super=%s login=%s inherit=%s bypassrls=%s createrole=%s member of %s', r.rolname,
				  r.rolsuper, r.rolcanlogin, r.rolinherit, r.rolbypassrls, r.rolcreaterole,
				  (SELECT string_agg(g.rolname, ',' ORDER BY g.rolname) FROM pg_auth_members am
				   JOIN pg_roles g ON g.oid = am.roleid WHERE am.member = r.oid))
	FROM pg_roles r WHERE r.rolname LIKE 'interop%'
	UNION ALL
	SELECT format('schema %s acl %s', n.nspname, pg_temp.acl(n.nspacl)) FROM pg_namespace n WHERE n.nspname = 'interop'
	UNION ALL
	SELECT format('event trigger %s on %s %s enabled %s', e.evtname, e.evtevent, e.evtfoid::regproc, e.evtenabled)
	FROM pg_event_trigger e JOIN members m ON m.classid = 'pg_event_trigger'::regclass AND m.objid = e.oid
	UNION ALL
	SELECT format('type %s kind %s input %s output %s', t.oid::regtype, t.typtype, t.typinput, t.typoutput)
	FROM pg_type t JOIN members m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
	UNION ALL
	SELECT format('dumped %s where %s', cfg.c::regclass, coalesce(cond.w, ''))
	FROM pg_extension x
	CROSS JOIN LATERAL unnest(x.extconfig, x.extcondition) AS u(c, w)
	CROSS JOIN LATERAL (SELECT u.c) cfg(c)
	CROSS JOIN LATERAL (SELECT u.w) cond(w)
	WHERE x.extname = 'interop'
	UNION ALL
	SELECT format('initial privileges of %s: %s', pg_describe_object(ip.classoid, ip.objoid, ip.objsubid), pg_temp.acl(ip.initprivs))
	FROM pg_init_privs ip JOIN members m ON m.classid = ip.classoid AND m.objid = ip.objoid
)
SELECT line FROM lines ORDER BY line COLLATE "C";
};

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION interop');
my $fresh = $node->safe_psql('fresh', $describe);
ok(length($fresh) > 10000, 'a fresh install is described (' . scalar(split /\n/, $fresh) . ' lines)');

for my $from (@released)
{
	my $db = "from_" . ($from =~ s/\W/_/gr);
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION interop VERSION '$from'");
	$node->safe_psql($db, 'ALTER EXTENSION interop UPDATE');
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'interop'"),
		$current, "$from updates to $current");
	my $updated = $node->safe_psql($db, $describe);
	my %f = map { $_ => 1 } split /\n/, $fresh;
	my %u = map { $_ => 1 } split /\n/, $updated;
	my @missing = grep { !$u{$_} } sort keys %f;
	my @extra   = grep { !$f{$_} } sort keys %u;
	is(scalar(@missing) + scalar(@extra), 0, "updated from $from equals a fresh $current")
	  or diag(join("\n", (map { "only in fresh:   $_" } @missing[0 .. ($#missing < 40 ? $#missing : 40)]),
		(map { "only in updated: $_" } @extra[0 .. ($#extra < 40 ? $#extra : 40)])));
	$node->safe_psql('postgres', "DROP DATABASE $db");
}

$node->stop;
done_testing();
