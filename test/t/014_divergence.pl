# 014_divergence.pl: the subscription that silently diverged (0.1.0).
# A 210 000-row table published with max_rows 5000, copied; then one
# transaction updates 111 111 rows, deletes 11 111, inserts one and updates
# it.  0.1.0 served five pages of that transaction's changes and then
# told the consumer it was up to date: a page of the change log was
# ordered by the text of its ids, not by the ids ("104497" < "5000"), so
# the next page's cursor skipped most of the transaction.  Proves that the
# copy ends equal to the source, row for row.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use InteropTest;

my $ca = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $POP = 'MN/GOV/1000001/population';
my $TAX = 'MN/GOV/2000002/tax';
my $pop = new_node('population', $POP, $ca, 'interop.seal_interval' => 0);
my $tax = new_node('tax', $TAX, $ca, 'interop.gateway_workers' => 0, 'interop.seal_interval' => 0);

$pop->safe_psql('postgres', qq{
	CREATE TABLE people (id text PRIMARY KEY, name text NOT NULL, city text, born date);
	INSERT INTO people SELECT 'q' || i, 'Person ' || i, 'Ulaanbaatar', date '1950-01-01' + i % 20000
	FROM generate_series(1, 210000) i;
	SELECT interop.publish('people_feed', 'people', max_rows => 5000, track_changes => true);
	SELECT interop.grant_access('people_feed', '$TAX');
});
$tax->safe_psql('postgres', qq{
	SELECT interop.add_peer('$POP', '@{[gateway_url($pop)]}');
	CREATE TABLE people_copy (id text PRIMARY KEY, name text NOT NULL, city text, born date);
});
ok(wait_for_gateway($pop, "$ca/fedroot/ca.crt", $tax), 'the provider gateway is up');
$tax->safe_psql('postgres', qq{
	SELECT interop.subscribe('$POP', 'people_feed', 'people_copy'::regclass, 'registry-copy', interval '1 second')});

sub digest
{
	my ($node, $table) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY t.id)) FROM $table t");
}
my $deadline = time() + 120;
usleep(200_000) while time() < $deadline && $tax->safe_psql('postgres', q{
	SELECT phase FROM interop.subscription}) ne 'sync';
is(digest($tax, 'people_copy'), digest($pop, 'people'), 'the copy equals the source');

# one transaction, as one psql -c with four statements
$pop->safe_psql('postgres', q{
	BEGIN;
	UPDATE people SET city = 'Tallinn' WHERE id LIKE 'q1%';
	DELETE FROM people WHERE id LIKE 'q2%';
	INSERT INTO people VALUES ('new', 'New', 'Darkhan', '2000-01-01');
	UPDATE people SET city = 'Erdenet' WHERE id = 'new';
	COMMIT;
});
my $want = digest($pop, 'people');
my $got = '';
$deadline = time() + 120;
while (time() < $deadline)
{
	$got = digest($tax, 'people_copy');
	last if $got eq $want;
	usleep(500_000);
}
is($got, $want, 'after one large transaction the copy equals the source again, row for row');
my $differ = $tax->safe_psql('postgres', q{SELECT count(*) FROM people_copy WHERE city = 'Ulaanbaatar' AND id LIKE 'q1%'});
is($differ, '0', 'no updated row kept its old value');

done_testing();
