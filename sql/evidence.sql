-- evidence.sql: a record that no seal covers is named by verify_log(),
-- whatever its id; prune_log() keeps interop.min_log_retention; auditors
-- verify but do not seal.  (Record ids depend on the tests before this
-- one: numbers in problems are shown as N.)
SELECT interop.seal_log() >= 0 AS sealed;
SELECT count(*) AS problems FROM interop.verify_log();
CREATE FUNCTION pg_temp.problems() RETURNS TABLE (log text, problem text)
LANGUAGE sql AS $$
    SELECT log, regexp_replace(problem, '[0-9]+(-[0-9]+-[0-9]+ [0-9:.+]+)?', 'N', 'g')
    FROM interop.verify_log() ORDER BY 1, 2
$$;

-- a superuser plants records: below every seal, beyond the sequence, and
-- a new one dated in the past
INSERT INTO interop.message_log (id, at, direction, peer, service, subject, status, duration_ms)
OVERRIDING SYSTEM VALUE
VALUES (-7, now() - interval '30 days', 'in', 'MN/GOV/2000002/tax', 'person', 'P1', 200, 1),
       (pg_sequence_last_value('interop.message_log_id_seq') + 1000, now(), 'in', 'MN/GOV/2000002/tax',
        'person', 'P1', 200, 1);
INSERT INTO interop.message_log (at, direction, peer, service, subject, status, duration_ms)
VALUES (now() - interval '2 days', 'in', 'MN/GOV/2000002/tax', 'person', 'P1', 200, 1);
INSERT INTO interop.consent_log (id, at, consent_id, event, subject, consumer, service, purpose, role)
OVERRIDING SYSTEM VALUE
VALUES (0, now() - interval '1 year', 1, 'granted', 'P1', 'MN/GOV/2000002/tax', 'person', 'x', 'nobody');
SELECT * FROM pg_temp.problems();
-- the planted rows show in the data-access report: verify_log() is what tells them apart
SELECT count(*) FROM interop.subject_access_report('P1') WHERE service = 'person';

-- once sealed, a record dated before the seal before its own is named too
SELECT interop.seal_log() > 0 AS sealed;
SELECT * FROM pg_temp.problems();
SET session_replication_role = replica;     -- a superuser removes what was planted
DELETE FROM interop.message_log WHERE subject = 'P1' AND service = 'person' AND duration_ms = 1;
DELETE FROM interop.consent_log WHERE id = 0;
RESET session_replication_role;
SELECT * FROM pg_temp.problems();

-- ---- prune_log() keeps interop.min_log_retention ----
SHOW interop.min_log_retention;
CREATE FUNCTION pg_temp.try_prune(cutoff timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    RETURN 'pruned ' || interop.prune_log(cutoff);
EXCEPTION WHEN invalid_parameter_value THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN regexp_replace(SQLERRM || ' / ' || detail, '[0-9]{4}-[0-9:. +-]*[0-9]', 'T', 'g');
END $$;
SELECT pg_temp.try_prune(now() + interval '1 day');
SELECT pg_temp.try_prune(now() - interval '29 days');
SELECT interop.prune_log(now() - interval '31 days') AS pruned;
CREATE ROLE regress_ev_admin IN ROLE interop_admin;
SET ROLE regress_ev_admin;
SET interop.min_log_retention = 0;
RESET ROLE;

-- a record planted inside a pruned range is named
SET interop.min_log_retention = 0;
SELECT interop.prune_log(now()) > 0 AS pruned;
INSERT INTO interop.message_log (id, at, direction, peer, service, subject, status, duration_ms)
OVERRIDING SYSTEM VALUE
VALUES ((SELECT max(upto_id) FROM interop.log_seal WHERE log = 'message_log' AND kind = 'prune'),
        now() - interval '1 hour', 'in', 'MN/GOV/2000002/tax', 'person', 'P1', 200, 1);
SELECT * FROM pg_temp.problems();
SET session_replication_role = replica;
DELETE FROM interop.message_log WHERE subject = 'P1' AND service = 'person' AND duration_ms = 1;
RESET session_replication_role;
RESET interop.min_log_retention;
SELECT * FROM pg_temp.problems();

-- ---- interop.evidence(): what it refuses, and why ----
CREATE FUNCTION pg_temp.try_evidence(id bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    state text;
    detail text;
BEGIN
    RETURN 'document of ' || (interop.evidence(id)->'record'->>'id' = id::text);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL;
    RETURN state || ': ' || regexp_replace(SQLERRM || ' / ' || coalesce(detail, ''), '[0-9]+', 'N', 'g');
END $$;
SELECT pg_temp.try_evidence(-1);
INSERT INTO interop.message_log (at, direction, peer, service, subject, status, duration_ms)
VALUES (now(), 'in', 'MN/GOV/2000002/tax', 'person', 'P2', 200, 2)
RETURNING id AS ev_id \gset
SELECT pg_temp.try_evidence(:ev_id);
SELECT interop.seal_log() > 0 AS sealed;
SELECT pg_temp.try_evidence(:ev_id);
SELECT d->>'typ' AS typ, d->'record'->>'service' AS service, d->'chain'->>0 = d->'seal'->>'jws' AS chain_starts_at_seal,
       d->>'seal_key' LIKE '-----BEGIN PUBLIC KEY-----%' AS seal_key, d->'cosignatures' AS cosignatures
FROM interop.evidence(:ev_id) d;
-- changed after it was sealed: no evidence; changed back: evidence again
SET session_replication_role = replica;
UPDATE interop.message_log SET status = 500 WHERE id = :ev_id;
SELECT pg_temp.try_evidence(:ev_id);
UPDATE interop.message_log SET status = 200 WHERE id = :ev_id;
RESET session_replication_role;
SELECT pg_temp.try_evidence(:ev_id);
SELECT * FROM pg_temp.problems();

-- ---- auditors verify; they do not seal ----
CREATE ROLE regress_ev_audit IN ROLE interop_auditor;
SET ROLE regress_ev_audit;
SELECT count(*) FROM interop.verify_log();
SELECT interop.seal_log();
SELECT pg_temp.try_evidence(:ev_id) AS auditor_evidence;
RESET ROLE;
DROP ROLE regress_ev_admin, regress_ev_audit;
