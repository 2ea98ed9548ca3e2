# 003_consent.pl: consent across agencies.  A health registry publishes a
# service that requires the citizen's consent; a clinic and an insurer are
# granted access to it.  Proves, over the gateway:
#  - without a consent the answer is a signed 403 consent_required (IX403),
#    and it is logged as such;
#  - a consent recorded at the provider opens exactly its (subject, consumer,
#    service, purpose): not another purpose, not another consumer, not
#    another subject;
#  - a consent revoked between two calls refuses the second; a consent that
#    expires between two calls refuses the second;
#  - the provider's data-access report names each read of the subject with
#    consumer, purpose, legal basis, consent and message id, and the
#    consumer's report names it too (the answer's "sub" claim).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use InteropTest;

my $ca = federation_ca(PostgreSQL::Test::Utils::tempdir());
my $REG = 'MN/GOV/5000005/health';
my $CLINIC = 'MN/GOV/6000006/clinic';
my $INSURER = 'MN/GOV/7000007/insurer';
my $reg = new_node('health', $REG, $ca);
my $clinic = new_node('clinic', $CLINIC, $ca, 'interop.gateway_workers' => 0);
my $insurer = new_node('insurer', $INSURER, $ca, 'interop.gateway_workers' => 0);

$reg->safe_psql('postgres', qq{
	CREATE TABLE record (person text PRIMARY KEY, blood_type text);
	INSERT INTO record VALUES ('УБ80010100', 'A+'), ('УБ92031522', 'O-');
	SELECT interop.publish('blood', 'record', filter_columns => '{person}', subject_column => 'person',
		requires_consent => true);
	SELECT interop.grant_access('blood', '$CLINIC', purposes => '{treatment,research}', legal_basis => 'Health Act, art. 7');
	SELECT interop.grant_access('blood', '$INSURER', legal_basis => 'Insurance Act, art. 3');
});
$_->safe_psql('postgres', "SELECT interop.add_peer('$REG', '@{[gateway_url($reg)]}')") for ($clinic, $insurer);
ok(wait_for_gateway($reg, "$ca/fedroot/ca.crt", $clinic), 'the registry gateway is up');

# ask(NODE, SUBJECT, PURPOSE): the blood type, or "SQLSTATE code"
sub ask
{
	my ($node, $subject, $purpose) = @_;
	my ($ret, $out, $err) = $node->psql('postgres',
		"SELECT q->>'blood_type' FROM interop.query('$REG', 'blood', '{\"person\":\"$subject\"}', '$purpose') q",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return $out if $ret == 0;
	return $err =~ /ERROR:\s+(\w{5}): .*: (\w+)$/m ? "$1 $2" : $err;
}

is(ask($clinic, 'УБ80010100', 'treatment'), 'IX403 consent_required', 'no consent: a signed 403 consent_required');

my $consent = $reg->safe_psql('postgres',
	"SELECT interop.grant_consent('УБ80010100', '$CLINIC', 'blood', 'treatment', evidence => 'form 118')");
is(ask($clinic, 'УБ80010100', 'treatment'), 'A+', 'with the consent the clinic reads the record');
is(ask($clinic, 'УБ80010100', 'research'), 'IX403 consent_required', '...not for another purpose');
is(ask($insurer, 'УБ80010100', 'treatment'), 'IX403 consent_required', '...not for another consumer');
is(ask($clinic, 'УБ92031522', 'treatment'), 'IX403 consent_required', '...not for another subject');

is($reg->safe_psql('postgres', qq{
	SELECT consumer, service, purpose, legal_basis, consent_id = $consent, message_id IS NOT NULL
	FROM interop.subject_access_report('УБ80010100')}),
	"$CLINIC|blood|treatment|Health Act, art. 7|t|t",
	'the registry\'s report names the read: consumer, purpose, legal basis, consent, message');
is($clinic->safe_psql('postgres', q{
	SELECT provider, service, purpose FROM interop.subject_access_report('УБ80010100')}),
	"$REG|blood|treatment", 'the clinic\'s own report names it too (the answer\'s "sub" claim)');
is($reg->safe_psql('postgres', q{
	SELECT count(*) FROM interop.message_log WHERE error_code = 'consent_required' AND subject IS NOT NULL}),
	'4', 'the refusals are logged with their subject');

# revoked between two calls
is(ask($clinic, 'УБ80010100', 'treatment'), 'A+', 'a call before the revocation is answered');
$reg->safe_psql('postgres', "SELECT interop.revoke_consent($consent)");
is(ask($clinic, 'УБ80010100', 'treatment'), 'IX403 consent_required', 'the call after it is refused');
is($reg->safe_psql('postgres', "SELECT string_agg(event, ',' ORDER BY id) FROM interop.consent_log WHERE consent_id = $consent"),
	'granted,revoked', 'the consent log keeps both events');

# expiring between two calls
$reg->safe_psql('postgres', qq{
	SELECT interop.grant_consent('УБ92031522', '$CLINIC', 'blood', 'research',
		valid_until => clock_timestamp() + interval '2 seconds')});
is(ask($clinic, 'УБ92031522', 'research'), 'O-', 'a consent with an end is honoured before it');
sleep 2.5;
is(ask($clinic, 'УБ92031522', 'research'), 'IX403 consent_required', '...and not after it');

done_testing();
