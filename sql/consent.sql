-- consent: recording, revoking, validity in time, and the provider's check
-- (through dry_run, which answers exactly as the gateway does); the
-- data-access report.  Nothing is ever deleted: consent_log keeps every event.
\set SHOW_CONTEXT never
SET search_path = public, interop;

CREATE ROLE regress_cs_admin IN ROLE interop_admin;
CREATE ROLE regress_cs_app IN ROLE interop_user;
CREATE ROLE regress_cs_portal IN ROLE interop_citizen_portal;
CREATE ROLE regress_cs_audit IN ROLE interop_auditor;
CREATE SCHEMA health;
CREATE TABLE health.record (person text PRIMARY KEY, blood_type text);
INSERT INTO health.record VALUES ('УБ80010100', 'A+'), ('УБ92031522', 'O-');
GRANT USAGE ON SCHEMA health TO regress_cs_admin;
GRANT SELECT ON health.record TO regress_cs_admin;

SET ROLE regress_cs_admin;
SELECT interop.publish('blood', 'health.record', filter_columns => '{person}',
                       subject_column => 'person', requires_consent => true);
SELECT interop.grant_access('blood', 'MN/GOV/5000005/hospital', legal_basis => 'Health Act, art. 7');
RESET ROLE;

-- without consent: refused, whatever the request
SET ROLE regress_cs_admin;
SELECT interop.dry_run('blood', 'MN/GOV/5000005/hospital', '{"person":"УБ80010100"}', 'treatment');
SELECT interop.dry_run('blood', 'MN/GOV/5000005/hospital', '{}', 'treatment');
SELECT interop.dry_run('blood', 'MN/GOV/5000005/hospital', '{"person":"УБ80010100"}');
RESET ROLE;

-- an application that exchanges data (interop_user) records no consent,
-- reads no consent and no citizen's access history
SET ROLE regress_cs_app;
SELECT interop.grant_consent('УБ80010100', 'MN/GOV/5000005/hospital', 'blood', 'treatment');
SELECT interop.revoke_consent(1);
SELECT interop.consent_valid('УБ80010100', 'MN/GOV/5000005/hospital', 'blood', 'treatment');
SELECT * FROM interop.subject_access_report('УБ80010100');
SELECT count(*) FROM interop.consent;
RESET ROLE;

-- the citizen portal records a consent (interop_citizen_portal)
SET ROLE regress_cs_portal;
SELECT interop.grant_consent('УБ80010100', 'MN/GOV/5000005/hospital', 'blood', 'treatment',
                             evidence => 'signed form 2026/118') AS consent \gset
SELECT interop.consent_valid('УБ80010100', 'MN/GOV/5000005/hospital', 'blood', 'treatment');
-- it is precise: another purpose, consumer, service or subject has none
SELECT interop.consent_valid('УБ80010100', 'MN/GOV/5000005/hospital', 'blood', 'research'),
       interop.consent_valid('УБ80010100', 'MN/GOV/6000006/insurer', 'blood', 'treatment'),
       interop.consent_valid('УБ80010100', 'MN/GOV/5000005/hospital', 'other', 'treatment'),
       interop.consent_valid('УБ92031522', 'MN/GOV/5000005/hospital', 'blood', 'treatment');
RESET ROLE;

SET ROLE regress_cs_admin;
SELECT interop.dry_run('blood', 'MN/GOV/5000005/hospital', '{"person":"УБ80010100"}', 'treatment');
SELECT interop.dry_run('blood', 'MN/GOV/5000005/hospital', '{"person":"УБ80010100"}', 'research');
SELECT interop.dry_run('blood', 'MN/GOV/5000005/hospital', '{"person":"УБ92031522"}', 'treatment');
RESET ROLE;

-- revoked: refused from then on; the consent and its history stay
SET ROLE regress_cs_portal;
SELECT interop.revoke_consent(:consent);
SELECT interop.revoke_consent(:consent);
SELECT interop.revoke_consent(999999);
SELECT interop.consent_valid('УБ80010100', 'MN/GOV/5000005/hospital', 'blood', 'treatment');
RESET ROLE;
SET ROLE regress_cs_admin;
SELECT interop.dry_run('blood', 'MN/GOV/5000005/hospital', '{"person":"УБ80010100"}', 'treatment');
RESET ROLE;

-- a consent with an end: valid until then, not after
SET ROLE regress_cs_portal;
SELECT interop.grant_consent('УБ92031522', 'MN/GOV/5000005/hospital', 'blood', 'treatment',
                             valid_until => clock_timestamp() + interval '1 second') AS short \gset
SELECT interop.consent_valid('УБ92031522', 'MN/GOV/5000005/hospital', 'blood', 'treatment');
SELECT pg_sleep(1.2);
SELECT interop.consent_valid('УБ92031522', 'MN/GOV/5000005/hospital', 'blood', 'treatment');
RESET ROLE;

-- bad input
SET ROLE regress_cs_portal;
SELECT interop.grant_consent('', 'MN/GOV/5000005/hospital', 'blood', 'treatment');
SELECT interop.grant_consent('УБ80010100', 'MN/GOV/5000005/hospital', 'blood', NULL);
SELECT interop.grant_consent('УБ80010100', 'MN/GOV/5000005/hospital', 'nosuch', 'treatment');
SELECT interop.grant_consent('УБ80010100', 'MN/GOV/5000005/hospital', 'blood', 'treatment',
                             valid_until => '2020-01-01 00:00+00');
SELECT interop.grant_consent('УБ80010100', 'not a member', 'blood', 'treatment');
RESET ROLE;

-- the history: every event, in order, with who recorded it
SELECT consent_id = :consent AS first, event, subject, consumer, service, purpose, evidence, role
FROM interop.consent_log ORDER BY id;
SELECT count(*) AS consents, count(revoked_at) AS revoked FROM interop.consent;

-- nobody writes the consent tables directly
SET ROLE regress_cs_portal;
DELETE FROM interop.consent;
UPDATE interop.consent SET revoked_at = NULL;
INSERT INTO interop.consent_log (consent_id, event, subject, consumer, service, purpose, role)
VALUES (1, 'granted', 'x', 'MN/GOV/1/x', 'blood', 'p', 'me');
SELECT count(*) FROM interop.consent_log;
RESET ROLE;
SET ROLE regress_cs_admin;
DELETE FROM interop.consent;
RESET ROLE;
SET ROLE regress_cs_audit;
SELECT count(*) AS audit_sees_history FROM interop.consent_log;
RESET ROLE;

-- the data-access report: the reads of a subject, from the message log
-- (written here by hand, as the gateway and interop.query write it)
INSERT INTO interop.message_log (direction, peer, service, purpose, legal_basis, subject, jti, status,
                                 row_count, duration_ms, consent_id, at)
VALUES ('in', 'MN/GOV/5000005/hospital', 'blood', 'treatment', 'Health Act, art. 7', 'УБ80010100',
        '11111111-1111-4111-8111-111111111111', 200, 1, 1.0, :consent, '2026-11-20 10:00+00'),
       ('in', 'MN/GOV/5000005/hospital', 'blood', 'research', NULL, 'УБ80010100',
        '22222222-2222-4222-8222-222222222222', 403, NULL, 1.0, NULL, '2026-11-20 11:00+00'),
       ('out', 'MN/GOV/7000007/registry', 'person', 'treatment', NULL, 'УБ80010100',
        '33333333-3333-4333-8333-333333333333', 200, 1, 1.0, NULL, '2026-11-21 09:00+00'),
       ('in', 'MN/GOV/5000005/hospital', 'blood', 'treatment', 'Health Act, art. 7', 'УБ92031522',
        '44444444-4444-4444-8444-444444444444', 200, 1, 1.0, NULL, '2026-11-21 10:00+00');
SET ROLE regress_cs_portal;
SELECT at, direction, provider, consumer, service, purpose, legal_basis, consent_id = :consent AS with_consent,
       message_id, row_count
FROM interop.subject_access_report('УБ80010100');
RESET ROLE;
-- it is indexed: a subject's reads are found without reading the whole log
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM interop.message_log WHERE subject = 'УБ80010100' AND status = 200;
RESET enable_seqscan;

SET ROLE regress_cs_admin;
SELECT interop.unpublish('blood');
RESET ROLE;
DROP SCHEMA health CASCADE;
DROP ROLE regress_cs_admin, regress_cs_app, regress_cs_portal, regress_cs_audit;
