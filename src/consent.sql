-- consent.sql: citizens' consents, their history, and the data-access report
--
-- interop.consent holds each consent and whether it was revoked;
-- interop.consent_log keeps every event (granted, revoked) and is never
-- updated.  Both are written only by the SECURITY DEFINER functions below:
-- no role holds INSERT, UPDATE or DELETE on them, and revocation never
-- deletes.  The gateway asks src/consent.c for a valid consent of the
-- subject of each request to a service with requires_consent.

CREATE TABLE interop.consent (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject     text NOT NULL CHECK (subject <> ''),
    consumer    interop.member_id NOT NULL,
    service     text NOT NULL,
    purpose     text NOT NULL CHECK (purpose <> ''),
    valid_from  timestamptz NOT NULL DEFAULT clock_timestamp(),
    valid_until timestamptz,
    evidence    text,                       -- what proves it: a document number, a signed form
    granted_by  name NOT NULL,              -- the role that recorded it
    revoked_at  timestamptz,
    revoked_by  name,
    CHECK (valid_until IS NULL OR valid_until > valid_from)
);
COMMENT ON TABLE interop.consent IS 'consents of subjects for a consumer, service and purpose; revoked ones stay, with revoked_at';
CREATE INDEX consent_lookup ON interop.consent (subject, consumer, service, purpose) WHERE revoked_at IS NULL;

CREATE TABLE interop.consent_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    consent_id  bigint NOT NULL,
    event       text NOT NULL CHECK (event IN ('granted', 'revoked')),
    subject     text NOT NULL,
    consumer    interop.member_id NOT NULL,
    service     text NOT NULL,
    purpose     text NOT NULL,
    valid_until timestamptz,
    evidence    text,
    role        name NOT NULL               -- who recorded the event
);
COMMENT ON TABLE interop.consent_log IS 'every consent event, granted and revoked (append-only)';
CREATE INDEX consent_log_subject ON interop.consent_log (subject, at);

SELECT pg_catalog.pg_extension_config_dump('interop.consent', '');
SELECT pg_catalog.pg_extension_config_dump('interop.consent_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('interop.consent_log', '');
SELECT pg_catalog.pg_extension_config_dump('interop.consent_log_id_seq', '');

-- the data-access report reads the log by subject
CREATE INDEX message_log_subject ON interop.message_log (subject, at) WHERE subject IS NOT NULL;

CREATE FUNCTION interop.grant_consent(subject text, consumer interop.member_id, service text, purpose text,
                                      valid_until timestamptz DEFAULT NULL, evidence text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM interop.refuse_on_standby('interop.grant_consent()');
    IF subject IS NULL OR consumer IS NULL OR service IS NULL OR purpose IS NULL THEN
        RAISE EXCEPTION 'subject, consumer, service and purpose must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF subject = '' OR purpose = '' THEN
        RAISE EXCEPTION 'subject and purpose must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT FROM interop.service s WHERE s.name = grant_consent.service) THEN
        RAISE EXCEPTION 'service "%" does not exist', service
            USING ERRCODE = 'undefined_object',
                  HINT = 'A consent is recorded by the provider, for one of its published services.';
    END IF;
    IF valid_until IS NOT NULL AND valid_until <= clock_timestamp() THEN
        RAISE EXCEPTION 'valid_until % is not in the future', valid_until
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL for a consent without an end.';
    END IF;
    INSERT INTO interop.consent AS c (subject, consumer, service, purpose, valid_until, evidence, granted_by)
    VALUES (grant_consent.subject, grant_consent.consumer, grant_consent.service, grant_consent.purpose,
            grant_consent.valid_until, grant_consent.evidence, interop.calling_role())
    RETURNING c.id INTO new_id;
    INSERT INTO interop.consent_log (consent_id, event, subject, consumer, service, purpose, valid_until, evidence, role)
    VALUES (new_id, 'granted', grant_consent.subject, grant_consent.consumer, grant_consent.service,
            grant_consent.purpose, grant_consent.valid_until, grant_consent.evidence, interop.calling_role());
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION interop.grant_consent(text, interop.member_id, text, text, timestamptz, text) IS
    'records a subject''s consent that consumer may read them through service for purpose, until valid_until; returns its id';

CREATE FUNCTION interop.revoke_consent(id bigint) RETURNS bool
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    c interop.consent;
BEGIN
    PERFORM interop.refuse_on_standby('interop.revoke_consent()');
    UPDATE interop.consent AS k SET revoked_at = clock_timestamp(), revoked_by = interop.calling_role()
    WHERE k.id = revoke_consent.id AND k.revoked_at IS NULL
    RETURNING k.* INTO c;
    IF NOT FOUND THEN
        IF EXISTS (SELECT FROM interop.consent k WHERE k.id = revoke_consent.id) THEN
            RAISE NOTICE 'consent % is already revoked, skipping', id;
            RETURN false;
        END IF;
        RAISE EXCEPTION 'consent % does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
    INSERT INTO interop.consent_log (consent_id, event, subject, consumer, service, purpose, valid_until, evidence, role)
    VALUES (c.id, 'revoked', c.subject, c.consumer, c.service, c.purpose, c.valid_until, c.evidence,
            interop.calling_role());
    RETURN true;
END
$$;
COMMENT ON FUNCTION interop.revoke_consent(bigint) IS
    'revokes a consent from now on (nothing is deleted); returns false when it was already revoked';

CREATE FUNCTION interop.consent_valid(subject text, consumer interop.member_id, service text, purpose text)
RETURNS bool
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
    SELECT EXISTS (SELECT FROM interop.consent c
                   WHERE c.subject = consent_valid.subject AND c.consumer = consent_valid.consumer
                     AND c.service = consent_valid.service AND c.purpose = consent_valid.purpose
                     AND c.revoked_at IS NULL AND c.valid_from <= clock_timestamp()
                     AND (c.valid_until IS NULL OR c.valid_until > clock_timestamp()))
$$;
COMMENT ON FUNCTION interop.consent_valid(text, interop.member_id, text, text) IS
    'whether the subject has a valid consent for consumer, service and purpose right now';

CREATE FUNCTION interop.subject_access_report(subject text)
RETURNS TABLE (at timestamptz, direction text, provider interop.member_id, consumer interop.member_id,
               service text, purpose text, legal_basis text, consent_id bigint, message_id uuid, row_count int)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
    SELECT m.at, m.direction,
           CASE m.direction WHEN 'in' THEN n.member_id ELSE m.peer END,
           CASE m.direction WHEN 'in' THEN m.peer ELSE n.member_id END,
           m.service, m.purpose, m.legal_basis, m.consent_id, m.jti, m.row_count
    FROM interop.message_log m LEFT JOIN interop.node n ON true
    WHERE m.subject = subject_access_report.subject AND m.status = 200 AND m.replay_of IS NULL
    ORDER BY m.at, m.id
$$;
COMMENT ON FUNCTION interop.subject_access_report(text) IS
    'who read this subject''s data through this node: when, which provider, consumer, service, purpose, legal basis, consent and message';

REVOKE ALL ON interop.consent, interop.consent_log FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.grant_consent(text, interop.member_id, text, text, timestamptz, text),
                       interop.revoke_consent(bigint),
                       interop.consent_valid(text, interop.member_id, text, text),
                       interop.subject_access_report(text) FROM PUBLIC;
-- Who may do what (docs/security.md, "Citizens' data"): consents are
-- recorded and withdrawn, and a citizen's access history is read, by the
-- application that authenticates citizens (interop_citizen_portal), not by
-- every application that exchanges data (interop_user); auditors read both.
GRANT EXECUTE ON FUNCTION interop.grant_consent(text, interop.member_id, text, text, timestamptz, text),
                          interop.revoke_consent(bigint),
                          interop.consent_valid(text, interop.member_id, text, text),
                          interop.subject_access_report(text) TO interop_citizen_portal;
GRANT EXECUTE ON FUNCTION interop.consent_valid(text, interop.member_id, text, text),
                          interop.subject_access_report(text) TO interop_auditor;
GRANT SELECT ON interop.consent TO interop_admin, interop_auditor, interop_citizen_portal;   -- admin: dry_run checks consent as the publisher
GRANT SELECT ON interop.consent_log TO interop_auditor;
GRANT SELECT ON interop.consent, interop.consent_log, interop.consent_log_id_seq TO interop_worker;
