-- interop 0.1.0: generated from src/schema.sql src/member_id.sql src/jws.sql src/x509.sql src/keys.sql src/publish.sql src/client.sql src/msglog.sql src/consent.sql src/seal.sql src/async.sql src/stats.sql src/subscribe.sql by make; do not edit
\echo Use "CREATE EXTENSION interop" to load this file. \quit

-- schema.sql: roles, schema privileges and the cache invalidation trigger.
-- CREATE EXTENSION creates schema interop (interop.control names it).

-- Roles are cluster-wide: create them once, keep them across DROP EXTENSION.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['interop_admin', 'interop_user', 'interop_auditor'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;
COMMENT ON ROLE interop_admin IS 'interop: manages the node identity, trust, peers and publishing';
COMMENT ON ROLE interop_user IS 'interop: signs, verifies, queries peers and records consent';
COMMENT ON ROLE interop_auditor IS 'interop: reads the logs';

REVOKE ALL ON SCHEMA interop FROM PUBLIC;
GRANT USAGE ON SCHEMA interop TO interop_admin, interop_user, interop_auditor;

-- Statement trigger on configuration tables: tells every backend at commit
-- to drop what it cached from the table (see src/interop.c).
CREATE FUNCTION interop.invalidate_cache() RETURNS trigger
    AS 'MODULE_PATHNAME', 'interop_invalidate_cache' LANGUAGE C;
REVOKE ALL ON FUNCTION interop.invalidate_cache() FROM PUBLIC;

-- member_id.sql: the interop.member_id type, its operators and opclasses

CREATE TYPE interop.member_id;

CREATE FUNCTION interop.member_id_in(cstring) RETURNS interop.member_id
    AS 'MODULE_PATHNAME', 'member_id_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.member_id_out(interop.member_id) RETURNS cstring
    AS 'MODULE_PATHNAME', 'member_id_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.member_id_recv(internal) RETURNS interop.member_id
    AS 'MODULE_PATHNAME', 'member_id_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.member_id_send(interop.member_id) RETURNS bytea
    AS 'MODULE_PATHNAME', 'member_id_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE interop.member_id (
    INPUT = interop.member_id_in,
    OUTPUT = interop.member_id_out,
    RECEIVE = interop.member_id_recv,
    SEND = interop.member_id_send,
    INTERNALLENGTH = VARIABLE,
    STORAGE = extended,
    CATEGORY = 'S',
    COLLATABLE = false
);
COMMENT ON TYPE interop.member_id IS
    'identifier of an agency or one of its systems: INSTANCE/CLASS/CODE[/SUBSYSTEM]';

CREATE FUNCTION interop.member_id_cmp(interop.member_id, interop.member_id) RETURNS int
    AS 'MODULE_PATHNAME', 'member_id_cmp' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.member_id_eq(interop.member_id, interop.member_id) RETURNS bool
    AS 'MODULE_PATHNAME', 'member_id_eq' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION interop.member_id_ne(interop.member_id, interop.member_id) RETURNS bool
    AS 'MODULE_PATHNAME', 'member_id_ne' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION interop.member_id_lt(interop.member_id, interop.member_id) RETURNS bool
    AS 'MODULE_PATHNAME', 'member_id_lt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION interop.member_id_le(interop.member_id, interop.member_id) RETURNS bool
    AS 'MODULE_PATHNAME', 'member_id_le' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION interop.member_id_gt(interop.member_id, interop.member_id) RETURNS bool
    AS 'MODULE_PATHNAME', 'member_id_gt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION interop.member_id_ge(interop.member_id, interop.member_id) RETURNS bool
    AS 'MODULE_PATHNAME', 'member_id_ge' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION interop.member_id_hash(interop.member_id) RETURNS int
    AS 'MODULE_PATHNAME', 'member_id_hash' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.member_id_hash_extended(interop.member_id, bigint) RETURNS bigint
    AS 'MODULE_PATHNAME', 'member_id_hash_extended' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR interop.= (
    LEFTARG = interop.member_id, RIGHTARG = interop.member_id,
    PROCEDURE = interop.member_id_eq, COMMUTATOR = OPERATOR(interop.=),
    NEGATOR = OPERATOR(interop.<>), RESTRICT = eqsel, JOIN = eqjoinsel,
    HASHES, MERGES);
CREATE OPERATOR interop.<> (
    LEFTARG = interop.member_id, RIGHTARG = interop.member_id,
    PROCEDURE = interop.member_id_ne, COMMUTATOR = OPERATOR(interop.<>),
    NEGATOR = OPERATOR(interop.=), RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR interop.< (
    LEFTARG = interop.member_id, RIGHTARG = interop.member_id,
    PROCEDURE = interop.member_id_lt, COMMUTATOR = OPERATOR(interop.>),
    NEGATOR = OPERATOR(interop.>=), RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR interop.<= (
    LEFTARG = interop.member_id, RIGHTARG = interop.member_id,
    PROCEDURE = interop.member_id_le, COMMUTATOR = OPERATOR(interop.>=),
    NEGATOR = OPERATOR(interop.>), RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR interop.> (
    LEFTARG = interop.member_id, RIGHTARG = interop.member_id,
    PROCEDURE = interop.member_id_gt, COMMUTATOR = OPERATOR(interop.<),
    NEGATOR = OPERATOR(interop.<=), RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
CREATE OPERATOR interop.>= (
    LEFTARG = interop.member_id, RIGHTARG = interop.member_id,
    PROCEDURE = interop.member_id_ge, COMMUTATOR = OPERATOR(interop.<=),
    NEGATOR = OPERATOR(interop.<), RESTRICT = scalargesel, JOIN = scalargejoinsel);

CREATE OPERATOR CLASS interop.member_id_ops
    DEFAULT FOR TYPE interop.member_id USING btree AS
        OPERATOR 1 interop.<,
        OPERATOR 2 interop.<=,
        OPERATOR 3 interop.=,
        OPERATOR 4 interop.>=,
        OPERATOR 5 interop.>,
        FUNCTION 1 interop.member_id_cmp(interop.member_id, interop.member_id);

CREATE OPERATOR CLASS interop.member_id_hash_ops
    DEFAULT FOR TYPE interop.member_id USING hash AS
        OPERATOR 1 interop.=,
        FUNCTION 1 interop.member_id_hash(interop.member_id),
        FUNCTION 2 interop.member_id_hash_extended(interop.member_id, bigint);

-- accessors
CREATE FUNCTION interop.instance(interop.member_id) RETURNS text
    AS 'MODULE_PATHNAME', 'member_id_instance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.member_class(interop.member_id) RETURNS text
    AS 'MODULE_PATHNAME', 'member_id_class' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.member_code(interop.member_id) RETURNS text
    AS 'MODULE_PATHNAME', 'member_id_code' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.subsystem(interop.member_id) RETURNS text
    AS 'MODULE_PATHNAME', 'member_id_subsystem' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION interop.instance(interop.member_id) IS 'the federation instance of a member id, e.g. MN';
COMMENT ON FUNCTION interop.member_class(interop.member_id) IS 'the member class of a member id, e.g. GOV';
COMMENT ON FUNCTION interop.member_code(interop.member_id) IS 'the member code of a member id, e.g. 1234567';
COMMENT ON FUNCTION interop.subsystem(interop.member_id) IS 'the subsystem of a member id, or NULL when it names the member itself';

-- jws.sql: the interop.jws type, inspection, sign() and verify()

CREATE TYPE interop.jws;
CREATE FUNCTION interop.jws_in(cstring) RETURNS interop.jws
    AS 'MODULE_PATHNAME', 'jws_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.jws_out(interop.jws) RETURNS cstring
    AS 'MODULE_PATHNAME', 'jws_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.jws_recv(internal) RETURNS interop.jws
    AS 'MODULE_PATHNAME', 'jws_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.jws_send(interop.jws) RETURNS bytea
    AS 'MODULE_PATHNAME', 'jws_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE TYPE interop.jws (
    INPUT = interop.jws_in,
    OUTPUT = interop.jws_out,
    RECEIVE = interop.jws_recv,
    SEND = interop.jws_send,
    INTERNALLENGTH = VARIABLE,
    STORAGE = extended,
    CATEGORY = 'S'
);
COMMENT ON TYPE interop.jws IS 'a JSON Web Signature in compact serialization (RFC 7515), checked for shape on input';

CREATE FUNCTION interop.jws_header(interop.jws) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'jws_header' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION interop.jws_header(interop.jws) IS
    'the protected header of a JWS, for inspection: not verified';
CREATE FUNCTION interop.jws_payload(interop.jws) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'jws_payload' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION interop.jws_payload(interop.jws) IS
    'the payload of a JWS, for inspection: not verified (use interop.verify)';

CREATE FUNCTION interop.sign(payload jsonb) RETURNS interop.jws
    AS 'MODULE_PATHNAME', 'interop_sign' LANGUAGE C VOLATILE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.sign(jsonb) IS
    'signs a payload with the node key; the header carries the node certificate chain (x5c)';

CREATE FUNCTION interop.verify(jws interop.jws) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'interop_verify' LANGUAGE C STABLE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.verify(interop.jws) IS
    'verifies a JWS against the trust anchors (chain, dates, revocation, signature) and returns its payload';

CREATE FUNCTION interop.verify(jws interop.jws, public_key_pem text) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'interop_verify_with_key' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION interop.verify(interop.jws, text) IS
    'verifies a JWS with the given public key (PEM) and returns its payload';

REVOKE ALL ON FUNCTION interop.sign(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.verify(interop.jws) FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.verify(interop.jws, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.sign(jsonb) TO interop_user;
GRANT EXECUTE ON FUNCTION interop.verify(interop.jws) TO interop_user;
GRANT EXECUTE ON FUNCTION interop.verify(interop.jws, text) TO interop_user;

-- x509.sql: trust anchors and certificate revocation lists

CREATE TABLE interop.trust_anchor (
    fingerprint text PRIMARY KEY,          -- hex SHA-256 of the DER certificate
    subject     text NOT NULL,
    not_before  timestamptz NOT NULL,
    not_after   timestamptz NOT NULL,
    certificate text NOT NULL,             -- PEM
    added_at    timestamptz NOT NULL DEFAULT now(),
    added_by    name NOT NULL DEFAULT session_user
);
COMMENT ON TABLE interop.trust_anchor IS 'CA certificates that this node trusts; delete a row to stop trusting it';

CREATE TABLE interop.crl (
    issuer       text PRIMARY KEY,
    this_update  timestamptz NOT NULL,
    next_update  timestamptz,
    crl          text NOT NULL,            -- PEM
    installed_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.crl IS 'the newest installed certificate revocation list of each issuer';

CREATE TRIGGER trust_anchor_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON interop.trust_anchor FOR EACH STATEMENT EXECUTE FUNCTION interop.invalidate_cache();
CREATE TRIGGER crl_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON interop.crl FOR EACH STATEMENT EXECUTE FUNCTION interop.invalidate_cache();

SELECT pg_catalog.pg_extension_config_dump('interop.trust_anchor', '');
SELECT pg_catalog.pg_extension_config_dump('interop.crl', '');

CREATE FUNCTION interop.add_trust_anchor(pem text) RETURNS int
    AS 'MODULE_PATHNAME', 'interop_add_trust_anchor' LANGUAGE C VOLATILE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.add_trust_anchor(text) IS
    'trusts the CA certificates of a PEM bundle; returns how many were new';

CREATE FUNCTION interop.add_crl(pem text) RETURNS bool
    AS 'MODULE_PATHNAME', 'interop_add_crl' LANGUAGE C VOLATILE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.add_crl(text) IS
    'installs a revocation list signed by a trust anchor; returns false when a newer one is installed';

REVOKE ALL ON FUNCTION interop.add_trust_anchor(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.add_crl(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.add_trust_anchor(text) TO interop_admin;
GRANT EXECUTE ON FUNCTION interop.add_crl(text) TO interop_admin;
GRANT SELECT, DELETE ON interop.trust_anchor, interop.crl TO interop_admin;
GRANT SELECT ON interop.trust_anchor, interop.crl TO interop_auditor;

-- keys.sql: the node identity (its private key is a file, never a column)

CREATE TABLE interop.node (
    singleton                bool PRIMARY KEY DEFAULT true CHECK (singleton),
    member_id                interop.member_id NOT NULL,
    alg                      text NOT NULL CHECK (alg IN ('ES256', 'EdDSA', 'PS256', 'RS256')),
    public_key               text NOT NULL,     -- PEM
    certificate_chain        text,              -- PEM, leaf first
    certificate_not_after    timestamptz,
    created_at               timestamptz NOT NULL DEFAULT now(),
    certificate_installed_at timestamptz
);
COMMENT ON TABLE interop.node IS 'this node''s member id, public key and certificate chain (one row)';

CREATE TRIGGER node_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON interop.node FOR EACH STATEMENT EXECUTE FUNCTION interop.invalidate_cache();
SELECT pg_catalog.pg_extension_config_dump('interop.node', '');

CREATE FUNCTION interop.init_node(member_id interop.member_id, alg text DEFAULT 'ES256',
                                  overwrite bool DEFAULT false) RETURNS text
    AS 'MODULE_PATHNAME', 'interop_init_node' LANGUAGE C VOLATILE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.init_node(interop.member_id, text, bool) IS
    'creates the node key (a 0600 file in the data directory) and identity; returns the public key PEM';

CREATE FUNCTION interop.certificate_request() RETURNS text
    AS 'MODULE_PATHNAME', 'interop_certificate_request' LANGUAGE C VOLATILE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.certificate_request() IS
    'a PEM certificate signing request for the node key, subject CN = the member id';

CREATE FUNCTION interop.install_certificate(chain_pem text) RETURNS void
    AS 'MODULE_PATHNAME', 'interop_install_certificate' LANGUAGE C VOLATILE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.install_certificate(text) IS
    'installs the node certificate chain (leaf first) after checking trust, dates, key and member id';

REVOKE ALL ON FUNCTION interop.init_node(interop.member_id, text, bool) FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.certificate_request() FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.install_certificate(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.init_node(interop.member_id, text, bool) TO interop_admin;
GRANT EXECUTE ON FUNCTION interop.certificate_request() TO interop_admin;
GRANT EXECUTE ON FUNCTION interop.install_certificate(text) TO interop_admin;
GRANT SELECT ON interop.node TO interop_admin, interop_auditor;

-- publish.sql: services, access grants and their admin history.
--
-- A published query runs with the privileges of the role that published it.
-- publish() and grant_access() are therefore SECURITY INVOKER: current_user
-- is the publisher.  The rules hold for direct DML too, because they live in
-- triggers: the owner of a service (and the author of a grant) is always
-- forced to current_user, so nobody can make a service run with another
-- role's privileges; columns are checked against the source; every change is
-- written to interop.admin_history by a SECURITY DEFINER trigger, and that
-- table is writable by nobody else.

CREATE TABLE interop.service (
    name             text PRIMARY KEY
                     CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    source           regclass NOT NULL,
    filter_columns   text[] NOT NULL DEFAULT '{}',
    subject_column   text,
    requires_consent bool NOT NULL DEFAULT false,
    max_rows         int NOT NULL DEFAULT 1000 CHECK (max_rows BETWEEN 1 AND 1000000),
    track_changes    bool NOT NULL DEFAULT false,
    description      text,
    owner            regrole NOT NULL DEFAULT current_user::regrole,
    published_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (NOT requires_consent OR subject_column IS NOT NULL)
);
COMMENT ON TABLE interop.service IS 'published services: a view or table, its filters, subject column, consent rule and row limit';

CREATE TABLE interop.access_grant (
    service     text NOT NULL REFERENCES interop.service ON UPDATE CASCADE ON DELETE CASCADE,
    consumer    interop.member_id NOT NULL,
    purposes    text[] CHECK (purposes IS NULL OR (cardinality(purposes) > 0 AND array_position(purposes, NULL) IS NULL)),
    legal_basis text,
    granted_by  regrole NOT NULL DEFAULT current_user::regrole,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, consumer)
);
COMMENT ON TABLE interop.access_grant IS 'which consumer may call which service, for which purposes (NULL: any), on which legal basis';

CREATE TABLE interop.admin_history (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    role        name NOT NULL,          -- the role in effect in the session (after SET ROLE)
    session_role name NOT NULL,         -- session_user: who logged in
    object      text NOT NULL,          -- 'service' or 'access_grant'
    action      text NOT NULL,          -- INSERT, UPDATE, DELETE
    old_value   jsonb,
    new_value   jsonb
);
COMMENT ON TABLE interop.admin_history IS 'every change to services and access grants: who, when, old and new value (append-only)';
CREATE INDEX ON interop.admin_history (object, at);

SELECT pg_catalog.pg_extension_config_dump('interop.service', '');
SELECT pg_catalog.pg_extension_config_dump('interop.access_grant', '');
SELECT pg_catalog.pg_extension_config_dump('interop.admin_history', '');
SELECT pg_catalog.pg_extension_config_dump('interop.admin_history_id_seq', '');

-- check a service row against its source; the owner is whoever writes it
CREATE FUNCTION interop.service_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
DECLARE
    kind "char";
    col text;
BEGIN
    NEW.owner := current_user::regrole;
    NEW.published_at := now();
    SELECT relkind INTO kind FROM pg_class WHERE oid = NEW.source;
    IF kind NOT IN ('r', 'v', 'm', 'p', 'f') THEN
        RAISE EXCEPTION 'cannot publish "%"', NEW.source
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'A service publishes a table, view, materialized view or foreign table.';
    END IF;
    IF NOT has_table_privilege(current_user, NEW.source, 'SELECT') THEN
        RAISE EXCEPTION 'role "%" cannot read "%"', current_user, NEW.source
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A published query runs with the privileges of the role that publishes it.',
                  HINT = 'Publish as a role that has SELECT on the source.';
    END IF;
    IF cardinality(NEW.filter_columns) <> cardinality(ARRAY(SELECT DISTINCT unnest(NEW.filter_columns))) THEN
        RAISE EXCEPTION 'filter columns of service "%" repeat a column', NEW.name
            USING ERRCODE = 'duplicate_column';
    END IF;
    FOREACH col IN ARRAY NEW.filter_columns ||
            CASE WHEN NEW.subject_column IS NULL THEN '{}'::text[] ELSE ARRAY[NEW.subject_column] END LOOP
        IF col IS NULL OR NOT EXISTS (SELECT FROM pg_attribute
                                      WHERE attrelid = NEW.source AND attname = col
                                        AND attnum > 0 AND NOT attisdropped) THEN
            RAISE EXCEPTION 'column "%" does not exist in "%"', col, NEW.source
                USING ERRCODE = 'undefined_column',
                      HINT = 'Filter and subject columns are column names of the source, as written in its definition.';
        END IF;
    END LOOP;
    IF NEW.subject_column IS NOT NULL AND NOT NEW.subject_column = ANY (NEW.filter_columns) THEN
        RAISE EXCEPTION 'subject column "%" must also be a filter column', NEW.subject_column
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A request names its subject by filtering on the subject column.',
                  HINT = format('Add %L to filter_columns.', NEW.subject_column);
    END IF;
    IF NEW.track_changes THEN
        IF kind <> 'r' THEN
            RAISE EXCEPTION 'cannot track changes of "%"', NEW.source
                USING ERRCODE = 'wrong_object_type',
                      DETAIL = 'track_changes captures changes with triggers on a table; views have none.',
                      HINT = 'Publish the table itself with track_changes => true.';
        END IF;
        IF interop.primary_key_of(NEW.source) IS NULL THEN
            RAISE EXCEPTION 'table "%" has no primary key', NEW.source
                USING ERRCODE = 'invalid_table_definition',
                      DETAIL = 'Subscribers apply changes by primary key.',
                      HINT = 'Add a primary key, or publish with track_changes => false.';
        END IF;
        IF NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = NEW.source), 'USAGE') THEN
            RAISE EXCEPTION 'only the owner of "%" can publish it with track_changes', NEW.source
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'track_changes adds triggers to the table.';
        END IF;
        IF NEW.requires_consent THEN
            RAISE EXCEPTION 'a service that requires consent cannot track changes'
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'A subscription copies every row; consent is given per subject and per request.';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION interop.access_grant_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    NEW.granted_by := current_user::regrole;
    NEW.granted_at := now();
    NEW.purposes := ARRAY(SELECT DISTINCT p FROM unnest(NEW.purposes) p ORDER BY p);
    IF NEW.purposes = '{}' THEN
        NEW.purposes := NULL;
    END IF;
    RETURN NEW;
END
$$;

-- the role in effect in the calling session, even inside SECURITY DEFINER
CREATE FUNCTION interop.calling_role() RETURNS name
    AS 'MODULE_PATHNAME', 'interop_calling_role' LANGUAGE C STABLE STRICT;
REVOKE ALL ON FUNCTION interop.calling_role() FROM PUBLIC;

-- the history writer: the only way rows enter interop.admin_history
CREATE FUNCTION interop.admin_history_record() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
BEGIN
    INSERT INTO interop.admin_history (role, session_role, object, action, old_value, new_value)
    VALUES (interop.calling_role(), session_user, TG_TABLE_NAME, TG_OP,
            CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
            CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION interop.admin_history_record() FROM PUBLIC;

CREATE TRIGGER service_check BEFORE INSERT OR UPDATE ON interop.service
    FOR EACH ROW EXECUTE FUNCTION interop.service_check();
CREATE TRIGGER service_history AFTER INSERT OR UPDATE OR DELETE ON interop.service
    FOR EACH ROW EXECUTE FUNCTION interop.admin_history_record();
CREATE TRIGGER access_grant_check BEFORE INSERT OR UPDATE ON interop.access_grant
    FOR EACH ROW EXECUTE FUNCTION interop.access_grant_check();
CREATE TRIGGER access_grant_history AFTER INSERT OR UPDATE OR DELETE ON interop.access_grant
    FOR EACH ROW EXECUTE FUNCTION interop.admin_history_record();

CREATE FUNCTION interop.publish(service text, source regclass, filter_columns text[] DEFAULT '{}',
                                subject_column text DEFAULT NULL, requires_consent bool DEFAULT false,
                                max_rows int DEFAULT 1000, track_changes bool DEFAULT false,
                                description text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    IF service IS NULL OR service !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid service name "%"', service
            USING ERRCODE = 'invalid_name',
                  DETAIL = 'A service name is 1 to 63 lower-case letters, digits, "_" or "-", starting with a letter.',
                  HINT = 'Example: person_address.';
    END IF;
    IF source IS NULL OR max_rows IS NULL OR requires_consent IS NULL THEN
        RAISE EXCEPTION 'source, max_rows and requires_consent must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF max_rows NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 1000000, not %', max_rows
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF requires_consent AND subject_column IS NULL THEN
        RAISE EXCEPTION 'a service that requires consent needs a subject column'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the column that identifies the citizen in subject_column.';
    END IF;
    INSERT INTO interop.service AS s (name, source, filter_columns, subject_column, requires_consent,
                                      max_rows, track_changes, description)
    VALUES (publish.service, publish.source, coalesce(publish.filter_columns, '{}'), publish.subject_column,
            publish.requires_consent, publish.max_rows, coalesce(publish.track_changes, false),
            publish.description)
    ON CONFLICT (name) DO UPDATE
        SET source = excluded.source, filter_columns = excluded.filter_columns,
            subject_column = excluded.subject_column, requires_consent = excluded.requires_consent,
            max_rows = excluded.max_rows, track_changes = excluded.track_changes,
            description = excluded.description;
END
$$;
COMMENT ON FUNCTION interop.publish(text, regclass, text[], text, bool, int, bool, text) IS
    'publishes (or republishes) a table or view as a service; it answers with the privileges of the calling role';

CREATE FUNCTION interop.unpublish(service text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    DELETE FROM interop.service s WHERE s.name = unpublish.service;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'service "%" does not exist', service
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT name FROM interop.service.';
    END IF;
END
$$;
COMMENT ON FUNCTION interop.unpublish(text) IS 'withdraws a service and its access grants (the admin history keeps them)';

CREATE FUNCTION interop.grant_access(service text, consumer interop.member_id, purposes text[] DEFAULT NULL,
                                     legal_basis text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM interop.service s WHERE s.name = grant_access.service) THEN
        RAISE EXCEPTION 'service "%" does not exist', service
            USING ERRCODE = 'undefined_object',
                  HINT = 'Publish it first with interop.publish().';
    END IF;
    IF consumer IS NULL THEN
        RAISE EXCEPTION 'consumer must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF array_position(purposes, NULL) IS NOT NULL OR '' = ANY (purposes) THEN
        RAISE EXCEPTION 'purposes must not contain null or empty strings'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL to allow any purpose.';
    END IF;
    INSERT INTO interop.access_grant AS g (service, consumer, purposes, legal_basis)
    VALUES (grant_access.service, grant_access.consumer, grant_access.purposes, grant_access.legal_basis)
    ON CONFLICT ON CONSTRAINT access_grant_pkey DO UPDATE
        SET purposes = excluded.purposes, legal_basis = excluded.legal_basis;
END
$$;
COMMENT ON FUNCTION interop.grant_access(text, interop.member_id, text[], text) IS
    'lets a consumer call a service, for the given purposes (NULL: any) and legal basis; access is denied by default';

CREATE FUNCTION interop.revoke_access(service text, consumer interop.member_id) RETURNS bool
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    DELETE FROM interop.access_grant g
    WHERE g.service = revoke_access.service AND g.consumer = revoke_access.consumer;
    IF NOT FOUND THEN
        RAISE NOTICE 'consumer "%" has no access to service "%", skipping', consumer, service;
        RETURN false;
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION interop.revoke_access(text, interop.member_id) IS
    'removes a consumer''s access grant; returns false when there was none';

REVOKE ALL ON FUNCTION interop.publish(text, regclass, text[], text, bool, int, bool, text),
                       interop.unpublish(text),
                       interop.grant_access(text, interop.member_id, text[], text),
                       interop.revoke_access(text, interop.member_id) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.publish(text, regclass, text[], text, bool, int, bool, text),
                          interop.unpublish(text),
                          interop.grant_access(text, interop.member_id, text[], text),
                          interop.revoke_access(text, interop.member_id) TO interop_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON interop.service, interop.access_grant TO interop_admin;
GRANT SELECT ON interop.service, interop.access_grant, interop.admin_history TO interop_auditor;
GRANT SELECT ON interop.admin_history TO interop_admin;

CREATE FUNCTION interop.dry_run(service text, consumer interop.member_id, params jsonb DEFAULT '{}',
                                purpose text DEFAULT NULL) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'interop_dry_run' LANGUAGE C VOLATILE
    SET search_path = pg_catalog, interop;   -- SECURITY INVOKER: it checks that the caller is the publisher
COMMENT ON FUNCTION interop.dry_run(text, interop.member_id, jsonb, text) IS
    'what the gateway would answer this consumer (columns, rows, truncated), or the refusal; for the service''s publisher';
REVOKE ALL ON FUNCTION interop.dry_run(text, interop.member_id, jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.dry_run(text, interop.member_id, jsonb, text) TO interop_admin;

-- A published source cannot be dropped from under its service: regclass
-- records no dependency, so an sql_drop event trigger refuses the drop.
-- It runs for every DROP by any role, hence SECURITY DEFINER: the dropping
-- role need not be able to read interop.service.
CREATE FUNCTION interop.refuse_drop_of_published_source() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    svc record;
BEGIN
    -- while the extension itself is being dropped there is nothing to protect
    IF to_regclass('interop.service') IS NULL THEN
        RETURN;
    END IF;
    SELECT s.name, d.object_identity INTO svc
    FROM pg_event_trigger_dropped_objects() d
    JOIN interop.service s ON s.source::oid = d.objid
    WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot drop "%": it is published as service "%"', svc.object_identity, svc.name
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = format('Run SELECT interop.unpublish(%L) first.', svc.name);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION interop.refuse_drop_of_published_source() FROM PUBLIC;
CREATE EVENT TRIGGER interop_published_source_drop ON sql_drop
    EXECUTE FUNCTION interop.refuse_drop_of_published_source();

-- client.sql: the peers this node calls (the consumer side)

CREATE TABLE interop.peer (
    member_id interop.member_id PRIMARY KEY,
    base_url  text NOT NULL,
    added_by  regrole NOT NULL DEFAULT current_user::regrole,
    added_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.peer IS 'other nodes this node calls: member id and base URL (https://host:port[/prefix])';
SELECT pg_catalog.pg_extension_config_dump('interop.peer', '');

-- interop.normalize_base_url: the canonical form of a peer base URL, or an error
CREATE FUNCTION interop.normalize_base_url(url text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, interop AS $$
DECLARE
    m text[];
    port int;
BEGIN
    -- https://host[:port][/prefix]: host is a DNS name, an IPv4 address or [IPv6]
    m := regexp_match(url, '^https://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(:([0-9]{1,5}))?(/[A-Za-z0-9._~/-]*)?$');
    IF m IS NULL THEN
        RAISE EXCEPTION 'invalid peer base URL "%"', url
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = CASE
                      WHEN url !~* '^https://' THEN 'A base URL starts with https://; interop talks to peers over TLS only.'
                      WHEN url ~ '[?#@]' THEN 'A base URL has no user name, query or fragment.'
                      ELSE 'A base URL is https://host:port with an optional path prefix.' END,
                  HINT = 'Example: https://tax.example.gov.mn:8443/interop';
    END IF;
    IF m[5] ~ '(^|/)\.\.?(/|$)' THEN
        RAISE EXCEPTION 'invalid peer base URL "%"', url
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The path prefix has a "." or ".." segment.';
    END IF;
    port := coalesce(m[4]::int, 443);
    IF port NOT BETWEEN 1 AND 65535 THEN
        RAISE EXCEPTION 'invalid peer base URL "%"', url
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Port %s is outside 1 to 65535.', port);
    END IF;
    RETURN 'https://' || lower(m[1]) || ':' || port || rtrim(coalesce(m[5], ''), '/');
END
$$;

CREATE FUNCTION interop.peer_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    NEW.base_url := interop.normalize_base_url(NEW.base_url);
    NEW.added_by := current_user::regrole;
    NEW.added_at := now();
    RETURN NEW;
END
$$;
CREATE TRIGGER peer_check BEFORE INSERT OR UPDATE ON interop.peer
    FOR EACH ROW EXECUTE FUNCTION interop.peer_check();
CREATE TRIGGER peer_history AFTER INSERT OR UPDATE OR DELETE ON interop.peer
    FOR EACH ROW EXECUTE FUNCTION interop.admin_history_record();

CREATE FUNCTION interop.add_peer(member_id interop.member_id, base_url text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    IF member_id IS NULL OR base_url IS NULL THEN
        RAISE EXCEPTION 'member_id and base_url must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    INSERT INTO interop.peer AS p (member_id, base_url) VALUES (add_peer.member_id, add_peer.base_url)
    ON CONFLICT ON CONSTRAINT peer_pkey DO UPDATE SET base_url = excluded.base_url;
    PERFORM interop.wake_sync_worker();     -- fetch its catalog after commit
END
$$;
COMMENT ON FUNCTION interop.add_peer(interop.member_id, text) IS
    'records (or moves) a peer: its member id and base URL, https://host:port[/prefix]';

CREATE FUNCTION interop.remove_peer(member_id interop.member_id) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    DELETE FROM interop.peer p WHERE p.member_id = remove_peer.member_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'peer "%" is not known', member_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT member_id, base_url FROM interop.peer.';
    END IF;
END
$$;
COMMENT ON FUNCTION interop.remove_peer(interop.member_id) IS 'forgets a peer';

REVOKE ALL ON FUNCTION interop.add_peer(interop.member_id, text), interop.remove_peer(interop.member_id) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.add_peer(interop.member_id, text), interop.remove_peer(interop.member_id) TO interop_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON interop.peer TO interop_admin;
GRANT SELECT ON interop.peer TO interop_user, interop_auditor;

-- interop.query: call a peer's service; one jsonb object per row
CREATE FUNCTION interop.query(provider interop.member_id, service text, params jsonb DEFAULT '{}',
                              purpose text DEFAULT NULL) RETURNS SETOF jsonb
    AS 'MODULE_PATHNAME', 'interop_query' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.query(interop.member_id, text, jsonb, text) IS
    'calls a service of a peer over HTTPS, verifies the signed answer, returns one jsonb object per row';

-- interop.catalog: the services a peer grants this node (its signed catalog, verified)
CREATE FUNCTION interop.catalog(provider interop.member_id) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'interop_catalog' LANGUAGE C VOLATILE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.catalog(interop.member_id) IS
    'the services a peer grants this node, from its signed catalog: names, columns, filters, purposes';

-- interop.import_service: a typed local function for a remote service
CREATE FUNCTION interop.import_service(provider interop.member_id, service text,
                                       local_schema name DEFAULT NULL) RETURNS regprocedure
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
DECLARE
    svc jsonb;
    col jsonb;
    f text;
    typ text;
    args text[] := '{}';
    pairs text[] := '{}';
    outcols text[] := '{}';
    reccols text[] := '{}';
    target name := coalesce(local_schema, current_schema());
    sig text;
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'no schema to create the function in'
            USING ERRCODE = 'invalid_schema_name', HINT = 'Pass local_schema.';
    END IF;
    SELECT s INTO svc FROM jsonb_array_elements(interop.catalog(provider)) s WHERE s->>'name' = service;
    IF svc IS NULL THEN
        RAISE EXCEPTION 'peer % has no service "%" for this node', provider, service
            USING ERRCODE = 'undefined_object',
                  HINT = format('See SELECT jsonb_pretty(interop.catalog(%L)); the provider grants access with interop.grant_access().', provider);
    END IF;
    -- a type unknown here (a domain or enum of the provider) arrives as text
    FOR col IN SELECT * FROM jsonb_array_elements(svc->'columns') LOOP
        typ := coalesce(to_regtype(col->>'type')::text, 'text');
        outcols := outcols || format('%I %s', col->>'name', typ);
        reccols := reccols || format('%I %s', col->>'name', typ);
    END LOOP;
    FOR f IN SELECT jsonb_array_elements_text(svc->'filters') LOOP
        SELECT coalesce(to_regtype(c->>'type')::text, 'text') INTO typ
        FROM jsonb_array_elements(svc->'columns') c WHERE c->>'name' = f;
        args := args || format('%I %s DEFAULT NULL', f, typ);
        pairs := pairs || format('%L, %I', f, f);
    END LOOP;
    args := args || 'purpose text DEFAULT NULL'::text;
    sig := format('%I.%I', target, service);
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %s(%s) RETURNS TABLE (%s)
        LANGUAGE sql VOLATILE AS $body$
            SELECT r.* FROM interop.query(%L::interop.member_id, %L,
                pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(%s)), purpose) AS q,
                pg_catalog.jsonb_to_record(q) AS r(%s)
        $body$ $f$,
        sig, array_to_string(args, ', '), array_to_string(outcols, ', '),
        provider, service, array_to_string(pairs, ', '), array_to_string(reccols, ', '));
    EXECUTE format('COMMENT ON FUNCTION %s IS %L', (SELECT format('%s(%s)', sig,
        (SELECT string_agg(split_part(a, ' ', 2), ', ') FROM unnest(args) a))),
        format('service %s of %s (imported by interop.import_service)', service, provider));
    RETURN to_regprocedure(format('%s(%s)', sig,
        (SELECT string_agg(regexp_replace(a, '^\S+ (.*?)( DEFAULT NULL)?$', '\1'), ', ') FROM unnest(args) a)));
END
$$;
COMMENT ON FUNCTION interop.import_service(interop.member_id, text, name) IS
    'creates local_schema.service(filters..., purpose) RETURNS TABLE(...) from the peer''s signed catalog';

REVOKE ALL ON FUNCTION interop.query(interop.member_id, text, jsonb, text),
                       interop.catalog(interop.member_id),
                       interop.import_service(interop.member_id, text, name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.query(interop.member_id, text, jsonb, text),
                          interop.catalog(interop.member_id),
                          interop.import_service(interop.member_id, text, name) TO interop_user;

-- msglog.sql: the message log, one row per exchange per side (docs/security.md, seals)
--
-- The gateway writes a row for every request it answers, refused ones
-- included, in the transaction that produced the answer: the answer is sent
-- only after that transaction commits, so nothing is answered unlogged.
-- interop.query() writes the consumer's row.  Nobody holds UPDATE or DELETE
-- on it; rows are written by the extension's own SECURITY DEFINER code.

CREATE TABLE interop.message_log (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    direction     text NOT NULL CHECK (direction IN ('in', 'out')),
    peer          interop.member_id,    -- the other node; NULL when the request could not be verified
    service       text,
    purpose       text,
    legal_basis   text,                 -- from the access grant (provider side)
    subject       text,                 -- the value of the service's subject column, when filtered on
    jti           uuid,                 -- the request's id, once its signature is verified
    request_hash  text,                 -- base64url SHA-256 of the request bytes (the "req" claim)
    request       text,                 -- the request JWS (detached, without payload, when interop.log_bodies = off)
    response      text,                 -- the response JWS (likewise); NULL when there was none
    response_hash text,                 -- base64url SHA-256 of the response bytes
    status        int NOT NULL,         -- HTTP status; 0 when no answer arrived
    error_code    text,                 -- wire error code, or the consumer's SQLSTATE
    error_message text,
    row_count     int,
    duration_ms   double precision NOT NULL,
    client        text,                 -- the TCP address of the caller (provider side)
    consent_id    bigint,               -- the consent the answer relied on (provider side)
    replay_of     bigint                -- a repeated jti: the id of its first record
);
COMMENT ON TABLE interop.message_log IS 'every exchange, served (in) and made (out), refused and failed ones included';

-- one first record per (consumer, jti): replay detection and idempotent
-- retry.  A 5xx answer is not a first record: a retry runs the request.
CREATE UNIQUE INDEX message_log_first_jti ON interop.message_log (peer, jti)
    WHERE direction = 'in' AND replay_of IS NULL AND status < 500;
CREATE INDEX message_log_at ON interop.message_log (at);
-- a JWS is base64: compression gains little and costs CPU on every exchange
ALTER TABLE interop.message_log ALTER COLUMN request SET STORAGE EXTERNAL,
                                ALTER COLUMN response SET STORAGE EXTERNAL;

SELECT pg_catalog.pg_extension_config_dump('interop.message_log', '');
SELECT pg_catalog.pg_extension_config_dump('interop.message_log_id_seq', '');

REVOKE ALL ON interop.message_log FROM PUBLIC;
GRANT SELECT ON interop.message_log TO interop_auditor;

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
GRANT EXECUTE ON FUNCTION interop.grant_consent(text, interop.member_id, text, text, timestamptz, text),
                          interop.revoke_consent(bigint),
                          interop.consent_valid(text, interop.member_id, text, text),
                          interop.subject_access_report(text) TO interop_user;
GRANT EXECUTE ON FUNCTION interop.consent_valid(text, interop.member_id, text, text),
                          interop.subject_access_report(text) TO interop_auditor;
GRANT SELECT ON interop.consent TO interop_admin, interop_user, interop_auditor;   -- admin: dry_run checks consent as the publisher
GRANT SELECT ON interop.consent_log TO interop_auditor;

-- seal.sql: seals over the logs, their verification, append-only and pruning (docs/security.md)
--
-- A seal covers the records of one log with ids in (after_id, upto_id]:
-- it keeps each record's (id, SHA-256) in "leaves", and its JWS, signed by
-- the node key, holds the Merkle root over them and the hash of the seal
-- before it (one chain per node).  The sync worker seals every
-- interop.seal_interval; interop.seal_log() seals now; interop.verify_log()
-- recomputes everything.  See src/seal.c.

-- every public key the node has signed with, so old seals verify after a key change
CREATE TABLE interop.node_key (
    public_key  text PRIMARY KEY,       -- PEM
    member_id   interop.member_id NOT NULL,
    alg         text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.node_key IS 'every public key this node has had; seals name theirs by key id (SHA-256 of the key)';
SELECT pg_catalog.pg_extension_config_dump('interop.node_key', '');

CREATE FUNCTION interop.record_node_key() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
BEGIN
    INSERT INTO interop.node_key (public_key, member_id, alg)
    VALUES (NEW.public_key, NEW.member_id, NEW.alg) ON CONFLICT (public_key) DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER node_key_history AFTER INSERT OR UPDATE OF public_key ON interop.node
    FOR EACH ROW EXECUTE FUNCTION interop.record_node_key();

CREATE TABLE interop.log_seal (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    log          text NOT NULL CHECK (log IN ('message_log', 'consent_log')),
    kind         text NOT NULL CHECK (kind IN ('seal', 'prune')),
    after_id     bigint NOT NULL,       -- covers records with after_id < id <= upto_id
    upto_id      bigint NOT NULL,
    record_count bigint NOT NULL,       -- records sealed (seal) or removed (prune)
    leaves       bytea,                 -- per record: id (8 bytes, big-endian) and its SHA-256
    root         text,                  -- base64url Merkle root over the leaves
    prev         text,                  -- base64url SHA-256 of the previous seal's JWS
    last_at      timestamptz,           -- the latest record time covered
    sealed_at    timestamptz NOT NULL,
    jws          text NOT NULL          -- the signed payload: all of the above but the leaves
);
COMMENT ON TABLE interop.log_seal IS 'signed seals over message_log and consent_log, chained; prune entries record removals';
ALTER TABLE interop.log_seal ALTER COLUMN leaves SET STORAGE EXTERNAL;
SELECT pg_catalog.pg_extension_config_dump('interop.log_seal', '');
SELECT pg_catalog.pg_extension_config_dump('interop.log_seal_id_seq', '');

-- the logs are append-only for every role, superusers included (unless
-- they disable triggers, which the seals then show)
CREATE FUNCTION interop.log_append_only() RETURNS trigger
    AS 'MODULE_PATHNAME', 'interop_log_append_only' LANGUAGE C;
CREATE TRIGGER message_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON interop.message_log
    FOR EACH STATEMENT EXECUTE FUNCTION interop.log_append_only();
CREATE TRIGGER consent_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON interop.consent_log
    FOR EACH STATEMENT EXECUTE FUNCTION interop.log_append_only();
CREATE TRIGGER log_seal_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON interop.log_seal
    FOR EACH STATEMENT EXECUTE FUNCTION interop.log_append_only();

CREATE FUNCTION interop.seal_log() RETURNS bigint
    AS 'MODULE_PATHNAME', 'interop_seal_log' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.seal_log() IS
    'seals the records of message_log and consent_log not sealed yet; returns how many';

-- a definer: the admin checks the logs without reading their records
CREATE FUNCTION interop.verify_log() RETURNS TABLE (log text, record_id bigint, problem text)
    AS 'MODULE_PATHNAME', 'interop_verify_log' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.verify_log() IS
    'recomputes every seal: one row per problem (changed, deleted or inserted record, broken seal or chain); no rows: all verifies';

CREATE FUNCTION interop.prune_log(before timestamptz) RETURNS bigint
    AS 'MODULE_PATHNAME', 'interop_prune_log' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.prune_log(timestamptz) IS
    'seals, then removes the records of whole seals older than before, with a signed prune entry; returns how many';

REVOKE ALL ON interop.node_key, interop.log_seal FROM PUBLIC;
GRANT SELECT ON interop.node_key, interop.log_seal TO interop_admin, interop_auditor;
REVOKE ALL ON FUNCTION interop.record_node_key() FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.seal_log() FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.verify_log() FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.prune_log(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.seal_log() TO interop_admin, interop_auditor;
GRANT EXECUTE ON FUNCTION interop.verify_log() TO interop_admin, interop_auditor;
GRANT EXECUTE ON FUNCTION interop.prune_log(timestamptz) TO interop_admin;

-- async.sql: durable asynchronous queries (docs/protocol.md)
--
-- interop.query_async() inserts a row in the caller's transaction (nothing
-- is sent if it rolls back) and wakes the sync worker at commit.  The worker
-- signs the request once, stores it, and sends those same bytes at every
-- attempt, so a retry after a lost answer or a crash is the same jti with
-- the same bytes, which the provider answers from its log without running
-- the query again (docs/protocol.md).  Retries back off up to interop.max_attempts.
-- The answer is verified before it is stored.  See src/async.c.

CREATE TABLE interop.async_request (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    requested_by  name NOT NULL,
    provider      interop.member_id NOT NULL,
    service       text NOT NULL,
    params        jsonb NOT NULL DEFAULT '{}',
    purpose       text,
    jti           uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    request       text,                 -- the signed request, fixed at the first attempt
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    attempts      int NOT NULL DEFAULT 0,
    next_attempt  timestamptz NOT NULL DEFAULT clock_timestamp(),
    http_status   int,
    error_code    text,                 -- wire error code, or SQLSTATE
    last_error    text,
    response      text,                 -- the verified answer JWS
    row_count     int,
    completed_at  timestamptz
);
COMMENT ON TABLE interop.async_request IS 'asynchronous queries: pending, done (with the verified answer) or failed';
CREATE INDEX async_request_due ON interop.async_request (next_attempt) WHERE state = 'pending';
SELECT pg_catalog.pg_extension_config_dump('interop.async_request', '');
SELECT pg_catalog.pg_extension_config_dump('interop.async_request_id_seq', '');
REVOKE ALL ON interop.async_request FROM PUBLIC;
GRANT SELECT ON interop.async_request TO interop_admin, interop_auditor;

CREATE FUNCTION interop.wake_sync_worker() RETURNS void
    AS 'MODULE_PATHNAME', 'interop_wake_sync_worker' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION interop.wake_sync_worker() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.wake_sync_worker() TO interop_admin, interop_user;

CREATE FUNCTION interop.query_async(provider interop.member_id, service text, params jsonb DEFAULT '{}',
                                    purpose text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    new_id bigint;
BEGIN
    IF provider IS NULL OR service IS NULL THEN
        RAISE EXCEPTION 'provider and service must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF params IS NULL OR jsonb_typeof(params) <> 'object' THEN
        RAISE EXCEPTION 'params must be a JSON object' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Example: ''{"id": "38001010000"}''';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM interop.peer p WHERE p.member_id = query_async.provider) THEN
        RAISE EXCEPTION 'peer "%" is not known', provider USING ERRCODE = 'undefined_object',
            HINT = format('Add it with SELECT interop.add_peer(%L, ''https://host:port'');', provider);
    END IF;
    INSERT INTO interop.async_request (requested_by, provider, service, params, purpose)
    VALUES (interop.calling_role(), provider, service, params, purpose)
    RETURNING id INTO new_id;
    PERFORM interop.wake_sync_worker();
    RETURN new_id;
END $$;
COMMENT ON FUNCTION interop.query_async(interop.member_id, text, jsonb, text) IS
    'queues a query to a peer, sent by the sync worker after commit with retries; returns its id';

-- the request as the caller may see it: their own, or any for an admin
CREATE FUNCTION interop.async_request_of(id bigint) RETURNS interop.async_request
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    r interop.async_request;
BEGIN
    SELECT * INTO r FROM interop.async_request a WHERE a.id = async_request_of.id;
    IF NOT FOUND OR (r.requested_by <> interop.calling_role()
                     AND NOT pg_has_role(interop.calling_role(), 'interop_admin', 'MEMBER')) THEN
        RAISE EXCEPTION 'asynchronous request % does not exist', id USING ERRCODE = 'undefined_object',
            HINT = 'A request is visible to the role that queued it, and to interop_admin.';
    END IF;
    RETURN r;
END $$;
REVOKE ALL ON FUNCTION interop.async_request_of(bigint) FROM PUBLIC;

CREATE FUNCTION interop.wait(id bigint, timeout interval DEFAULT '30 s') RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout;
    s text;
BEGIN
    LOOP
        s := (interop.async_request_of(id)).state;
        IF s <> 'pending' OR clock_timestamp() >= deadline THEN
            RETURN s;
        END IF;
        PERFORM pg_sleep(0.005);
    END LOOP;
END $$;
COMMENT ON FUNCTION interop.wait(bigint, interval) IS
    'waits until an asynchronous request is done or failed, at most timeout; returns its state';

CREATE FUNCTION interop.result_rows(response text) RETURNS SETOF jsonb
    AS 'MODULE_PATHNAME', 'interop_result_rows' LANGUAGE C STRICT;
REVOKE ALL ON FUNCTION interop.result_rows(text) FROM PUBLIC;

CREATE FUNCTION interop.result(id bigint) RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    r interop.async_request := interop.async_request_of(id);
BEGIN
    IF r.state = 'pending' THEN
        RAISE EXCEPTION 'asynchronous request % is not done yet', id USING ERRCODE = 'object_not_in_prerequisite_state',
            DETAIL = format('%s attempts so far%s', r.attempts, coalesce('; last: ' || r.last_error, '')),
            HINT = 'Wait for it with SELECT interop.wait(id), or LISTEN interop_async.';
    ELSIF r.state = 'failed' THEN
        RAISE EXCEPTION 'asynchronous request % failed: %', id, r.last_error
            USING ERRCODE = CASE WHEN r.error_code ~ '^[0-9A-Z]{5}$' THEN r.error_code ELSE 'IX500' END,
                  DETAIL = format('after %s attempts; HTTP %s', r.attempts, coalesce(r.http_status::text, 'none'));
    END IF;
    RETURN QUERY SELECT * FROM interop.result_rows(r.response);
END $$;
COMMENT ON FUNCTION interop.result(bigint) IS
    'the rows of a done asynchronous request (verified when they arrived); an ERROR if pending or failed';

REVOKE ALL ON FUNCTION interop.query_async(interop.member_id, text, jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.wait(bigint, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.result(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.query_async(interop.member_id, text, jsonb, text) TO interop_admin, interop_user;
GRANT EXECUTE ON FUNCTION interop.wait(bigint, interval) TO interop_admin, interop_user;
GRANT EXECUTE ON FUNCTION interop.result(bigint) TO interop_admin, interop_user;

-- peer catalogs, refreshed by the sync worker every interop.sync_interval
CREATE TABLE interop.peer_catalog (
    peer        interop.member_id PRIMARY KEY REFERENCES interop.peer (member_id) ON DELETE CASCADE,
    services    jsonb,                  -- the services the peer grants this node (verified)
    etag        text,                   -- sent back as If-None-Match: an unchanged catalog is a 304
    fetched_at  timestamptz,            -- when services last changed here
    checked_at  timestamptz,            -- the last attempt
    failures    int NOT NULL DEFAULT 0, -- attempts failed in a row
    last_error  text,
    next_check  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.peer_catalog IS 'each peer''s signed catalog as last fetched and verified by the sync worker';
REVOKE ALL ON interop.peer_catalog FROM PUBLIC;
GRANT SELECT ON interop.peer_catalog TO interop_admin, interop_user, interop_auditor;

-- where the sync worker fetches CRLs: the distribution points named by the
-- trust anchors and the node's certificate chain (http:// only: a CRL is signed)
CREATE TABLE interop.crl_source (
    url         text PRIMARY KEY,
    fetched_at  timestamptz,            -- the last successful fetch
    checked_at  timestamptz,
    failures    int NOT NULL DEFAULT 0,
    last_error  text,
    next_fetch  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.crl_source IS 'CRL distribution points the sync worker fetches every interop.sync_interval';
REVOKE ALL ON interop.crl_source FROM PUBLIC;
GRANT SELECT ON interop.crl_source TO interop_admin, interop_auditor;

-- stats.sql: counters of exchanges since the server started (src/stats.c)

CREATE FUNCTION interop.stat_counters(kind text)
RETURNS TABLE (name text, status int, requests bigint, total_ms double precision,
               last_error text, last_error_at timestamptz)
    AS 'MODULE_PATHNAME', 'interop_stat_counters' LANGUAGE C VOLATILE STRICT;
REVOKE ALL ON FUNCTION interop.stat_counters(text) FROM PUBLIC;

CREATE VIEW interop.stat_gateway AS
    SELECT name AS service, status, requests,
           round((total_ms / nullif(requests, 0))::numeric, 3) AS avg_ms, last_error, last_error_at
    FROM interop.stat_counters('gateway');
COMMENT ON VIEW interop.stat_gateway IS 'requests answered by the gateway since the server started, by service and HTTP status';

CREATE VIEW interop.stat_peer AS
    SELECT name AS peer, status, requests AS calls,
           round((total_ms / nullif(requests, 0))::numeric, 3) AS avg_ms, last_error, last_error_at
    FROM interop.stat_counters('peer');
COMMENT ON VIEW interop.stat_peer IS 'calls this node made to peers since the server started, by peer and HTTP status (0: no answer)';

REVOKE ALL ON interop.stat_gateway, interop.stat_peer FROM PUBLIC;
GRANT SELECT ON interop.stat_gateway, interop.stat_peer TO interop_admin, interop_auditor;

-- subscribe.sql: change capture on the provider, subscriptions on the consumer
-- (docs/protocol.md, POST /v1/changes).  See src/changes.c and
-- docs/architecture.md, "Subscriptions".
--
-- Provider.  A service published with track_changes => true has three
-- statement triggers on its table that write the primary key of every
-- inserted, updated or deleted row to interop.change_log, with the id of
-- the writing transaction (tx).  The rows themselves are not copied: the
-- gateway answers a change request with the rows as they are when it
-- answers (or a delete when the key is gone), so the order in which
-- concurrent transactions committed does not matter.  A cursor names a
-- range of transaction ids; a range is served only once every transaction
-- in it has ended (below the snapshot's xmin), so nothing can commit into a
-- range that was served.
--
-- Consumer.  interop.subscribe() records a subscription; the sync worker
-- pulls it: first the initial copy, in pages by primary key, then the
-- changes, each batch applied with its cursor in one transaction.

CREATE TABLE interop.change_log (
    id      bigint GENERATED ALWAYS AS IDENTITY,
    source  oid NOT NULL,                                   -- the published table
    tx      xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    key     jsonb NOT NULL,                                 -- the primary key, as an object
    at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE interop.change_log IS 'keys changed in tables published with track_changes, by transaction; served by POST /v1/changes';
CREATE INDEX change_log_range ON interop.change_log (source, tx, id);
CREATE INDEX change_log_at ON interop.change_log (at);
REVOKE ALL ON interop.change_log FROM PUBLIC;
GRANT SELECT ON interop.change_log TO interop_admin, interop_auditor;

-- below which transaction id the change log of a table was pruned
CREATE TABLE interop.change_pruned (
    source  oid PRIMARY KEY,
    below   xid8 NOT NULL,
    at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE interop.change_pruned IS 'per tracked table: cursors older than "below" are expired (410 cursor_expired)';
REVOKE ALL ON interop.change_pruned FROM PUBLIC;
GRANT SELECT ON interop.change_pruned TO interop_admin, interop_auditor;

-- the capture trigger: TG_ARGV holds the primary key's column names
CREATE FUNCTION interop.capture_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    k text := (SELECT string_agg(format('%L, %I', c, c), ', ') FROM unnest(TG_ARGV) c);
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO interop.change_log (source, key) '
                       'SELECT $1, jsonb_build_object(%s) FROM interop_new', k) USING TG_RELID;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('INSERT INTO interop.change_log (source, key) '
                       'SELECT $1, jsonb_build_object(%s) FROM interop_old', k) USING TG_RELID;
    ELSE
        EXECUTE format('INSERT INTO interop.change_log (source, key) SELECT $1, c.k FROM '
                       '(SELECT jsonb_build_object(%1$s) FROM interop_old UNION '
                       ' SELECT jsonb_build_object(%1$s) FROM interop_new) AS c(k)', k) USING TG_RELID;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION interop.capture_changes() FROM PUBLIC;

CREATE FUNCTION interop.refuse_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    RAISE EXCEPTION 'cannot truncate "%": it is published with track_changes', TG_RELID::regclass
        USING ERRCODE = 'object_in_use',
              DETAIL = 'TRUNCATE does not say which rows it removed, so subscribers could not follow it.',
              HINT = 'Use DELETE, or publish the service with track_changes => false first.';
END
$$;
REVOKE ALL ON FUNCTION interop.refuse_truncate() FROM PUBLIC;

-- the primary key of a table, in index order (NULL when it has none)
CREATE FUNCTION interop.primary_key_of(rel regclass) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, interop AS $$
    SELECT array_agg(a.attname::text ORDER BY k.ord)
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = rel AND i.indisprimary
$$;
REVOKE ALL ON FUNCTION interop.primary_key_of(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.primary_key_of(regclass) TO interop_admin, interop_user;

-- after every change to interop.service: the capture triggers of the
-- tables involved exist exactly while a service tracks them
CREATE FUNCTION interop.service_capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    rel regclass;
    pk text[];
    args text;
BEGIN
    FOREACH rel IN ARRAY ARRAY[CASE WHEN TG_OP <> 'INSERT' THEN OLD.source END,
                               CASE WHEN TG_OP <> 'DELETE' THEN NEW.source END] LOOP
        CONTINUE WHEN rel IS NULL OR to_regclass(rel::text) IS NULL;
        IF EXISTS (SELECT FROM interop.service s WHERE s.source = rel AND s.track_changes) THEN
            pk := interop.primary_key_of(rel);
            args := (SELECT string_agg(quote_literal(c), ', ') FROM unnest(pk) c);
            IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = 'interop_capture_insert') THEN
                EXECUTE format('CREATE TRIGGER interop_capture_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS interop_new '
                               'FOR EACH STATEMENT EXECUTE FUNCTION interop.capture_changes(%s)', rel, args);
                EXECUTE format('CREATE TRIGGER interop_capture_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS interop_old '
                               'NEW TABLE AS interop_new FOR EACH STATEMENT EXECUTE FUNCTION interop.capture_changes(%s)', rel, args);
                EXECUTE format('CREATE TRIGGER interop_capture_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS interop_old '
                               'FOR EACH STATEMENT EXECUTE FUNCTION interop.capture_changes(%s)', rel, args);
                EXECUTE format('CREATE TRIGGER interop_capture_truncate BEFORE TRUNCATE ON %s '
                               'FOR EACH STATEMENT EXECUTE FUNCTION interop.refuse_truncate()', rel);
                -- changes before now were not captured: older cursors are expired
                INSERT INTO interop.change_pruned AS p (source, below)
                VALUES (rel, (pg_current_xact_id()::text::numeric + 1)::text::xid8)
                ON CONFLICT (source) DO UPDATE SET below = greatest(p.below, excluded.below), at = now();
            ELSE
                -- the triggers came back with the table (a restore): where the log starts is unknown
                INSERT INTO interop.change_pruned (source, below)
                VALUES (rel, (pg_current_xact_id()::text::numeric + 1)::text::xid8)
                ON CONFLICT (source) DO NOTHING;
            END IF;
        ELSIF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = 'interop_capture_insert') THEN
            EXECUTE format('DROP TRIGGER interop_capture_insert ON %s', rel);
            EXECUTE format('DROP TRIGGER interop_capture_update ON %s', rel);
            EXECUTE format('DROP TRIGGER interop_capture_delete ON %s', rel);
            EXECUTE format('DROP TRIGGER interop_capture_truncate ON %s', rel);
            DELETE FROM interop.change_log WHERE source = rel;
            DELETE FROM interop.change_pruned WHERE source = rel;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION interop.service_capture() FROM PUBLIC;
CREATE TRIGGER service_capture AFTER INSERT OR UPDATE OR DELETE ON interop.service
    FOR EACH ROW EXECUTE FUNCTION interop.service_capture();

-- retention: the sync worker calls this every seal_interval
CREATE FUNCTION interop.prune_changes(older_than interval) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    n bigint;
BEGIN
    WITH gone AS (
        DELETE FROM interop.change_log WHERE at < now() - older_than RETURNING source, tx
    ), horizon AS (
        SELECT source, max(tx) AS tx, count(*) AS n FROM gone GROUP BY source
    ), marked AS (
        INSERT INTO interop.change_pruned AS p (source, below)
        SELECT source, (tx::text::numeric + 1)::text::xid8 FROM horizon
        ON CONFLICT (source) DO UPDATE SET below = greatest(p.below, excluded.below), at = now()
        RETURNING 1
    )
    SELECT coalesce(sum(h.n), 0) INTO n FROM horizon h, (SELECT count(*) FROM marked) m;
    RETURN n;
END
$$;
COMMENT ON FUNCTION interop.prune_changes(interval) IS
    'deletes change log entries older than the interval; subscribers behind them start a new copy';
REVOKE ALL ON FUNCTION interop.prune_changes(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.prune_changes(interval) TO interop_admin;

-- ---- the consumer ----

CREATE TABLE interop.subscription (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider         interop.member_id NOT NULL,
    service          text NOT NULL,
    target           regclass NOT NULL UNIQUE,
    purpose          text,
    every            interval NOT NULL DEFAULT '1 min' CHECK (every >= '10 ms'),
    owner            name NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    phase            text NOT NULL DEFAULT 'copy' CHECK (phase IN ('copy', 'sync')),
    cursor           jsonb,                 -- the provider's, opaque; NULL: start a copy
    rows_copied      bigint NOT NULL DEFAULT 0,
    changes_applied  bigint NOT NULL DEFAULT 0,
    batches          bigint NOT NULL DEFAULT 0,
    copy_started_at  timestamptz,
    copy_finished_at timestamptz,
    synced_at        timestamptz,           -- what the provider committed before this is applied
    last_pull_at     timestamptz,
    failures         int NOT NULL DEFAULT 0,
    last_error       text,
    next_pull        timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    UNIQUE (provider, service)
);
COMMENT ON TABLE interop.subscription IS 'local tables kept equal to a remote service that tracks changes';
SELECT pg_catalog.pg_extension_config_dump('interop.subscription', '');
SELECT pg_catalog.pg_extension_config_dump('interop.subscription_id_seq', '');
REVOKE ALL ON interop.subscription FROM PUBLIC;
GRANT SELECT ON interop.subscription TO interop_admin, interop_auditor;

CREATE FUNCTION interop.subscribe(provider interop.member_id, service text, target regclass,
                                  purpose text DEFAULT NULL, every interval DEFAULT '1 min') RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    who name := interop.calling_role();
    priv text;
    new_id bigint;
BEGIN
    IF provider IS NULL OR service IS NULL OR target IS NULL OR every IS NULL THEN
        RAISE EXCEPTION 'provider, service, target and every must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT FROM interop.peer p WHERE p.member_id = subscribe.provider) THEN
        RAISE EXCEPTION 'peer "%" is not known', provider USING ERRCODE = 'undefined_object',
            HINT = format('Add it with SELECT interop.add_peer(%L, ''https://host:port'');', provider);
    END IF;
    IF every < interval '10 ms' THEN
        RAISE EXCEPTION 'every must be at least 10 ms, not %', every USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (SELECT relkind FROM pg_class WHERE oid = target) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'cannot subscribe into "%"', target USING ERRCODE = 'wrong_object_type',
            DETAIL = 'The target of a subscription is a table.';
    END IF;
    IF interop.primary_key_of(target) IS NULL THEN
        RAISE EXCEPTION 'table "%" has no primary key', target USING ERRCODE = 'invalid_table_definition',
            DETAIL = 'Changes are applied by primary key; it must be the provider''s.',
            HINT = 'Add the same primary key as the remote table''s.';
    END IF;
    FOREACH priv IN ARRAY ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'] LOOP
        IF NOT has_table_privilege(who, target, priv) THEN
            RAISE EXCEPTION 'role "%" cannot % "%"', who, priv, target USING ERRCODE = 'insufficient_privilege',
                DETAIL = 'The sync worker applies the changes with the privileges of the role that subscribes.';
        END IF;
    END LOOP;
    IF EXISTS (SELECT FROM interop.subscription s WHERE s.target = subscribe.target
                                                     OR (s.provider = subscribe.provider AND s.service = subscribe.service)) THEN
        RAISE EXCEPTION 'a subscription to service "%" of "%" or into "%" exists already', service, provider, target
            USING ERRCODE = 'duplicate_object',
                  HINT = 'See interop.stat_subscription; interop.unsubscribe() removes one.';
    END IF;
    INSERT INTO interop.subscription (provider, service, target, purpose, every, owner)
    VALUES (provider, service, target, purpose, every, who)
    RETURNING id INTO new_id;
    PERFORM interop.wake_sync_worker();
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION interop.subscribe(interop.member_id, text, regclass, text, interval) IS
    'keeps a local table equal to a remote service that tracks changes: an initial copy, then the changes every interval';

CREATE FUNCTION interop.unsubscribe(provider interop.member_id, service text) RETURNS bool
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
BEGIN
    DELETE FROM interop.subscription s
    WHERE s.provider = unsubscribe.provider AND s.service = unsubscribe.service
      AND (s.owner = interop.calling_role() OR pg_has_role(interop.calling_role(), 'interop_admin', 'MEMBER'));
    IF NOT FOUND THEN
        RAISE NOTICE 'there is no subscription to service "%" of "%", skipping', service, provider;
        RETURN false;
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION interop.unsubscribe(interop.member_id, text) IS
    'stops a subscription; the local table keeps its rows';

-- one batch into the target; SECURITY INVOKER: the sync worker calls it as
-- the subscription's owner
CREATE FUNCTION interop.apply_changes(target regclass, batch jsonb, reset bool, copy bool DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
DECLARE
    key text[] := ARRAY(SELECT jsonb_array_elements_text(batch->'key'));
    tkey text[] := interop.primary_key_of(target);
    cols text[];
    rest text[];
    keydefs text;
    ins text;
    rows jsonb;
    n bigint := 0;
    m bigint;
BEGIN
    IF tkey IS DISTINCT FROM key THEN
        RAISE EXCEPTION 'the primary key of "%" is not the provider''s', target
            USING ERRCODE = 'invalid_table_definition',
                  DETAIL = format('The provider''s key is (%s); the target''s is (%s).',
                                  array_to_string(key, ', '), coalesce(array_to_string(tkey, ', '), 'none'));
    END IF;
    IF reset THEN
        EXECUTE format('DELETE FROM %s', target);
    END IF;
    -- rows are read with jsonb_to_recordset and the target's column types
    rows := batch->'deletes';
    IF jsonb_array_length(rows) > 0 THEN
        SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ')
          INTO keydefs
          FROM unnest(key) c JOIN pg_attribute a ON a.attrelid = target AND a.attname = c;
        EXECUTE format('DELETE FROM %s AS t USING jsonb_to_recordset($1) AS d(%s) WHERE (%s) = (%s)',
                       target, keydefs,
                       (SELECT string_agg(format('t.%I', c), ', ') FROM unnest(key) c),
                       (SELECT string_agg(format('d.%I', c), ', ') FROM unnest(key) c))
            USING rows;
        GET DIAGNOSTICS m = ROW_COUNT;
        n := n + m;
    END IF;
    rows := batch->'upserts';
    IF jsonb_array_length(rows) > 0 THEN
        SELECT array_agg(a.attname::text ORDER BY a.attnum),
               string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)
          INTO cols, keydefs
          FROM pg_attribute a
         WHERE a.attrelid = target AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
           AND a.attname::text IN (SELECT c->>'name' FROM jsonb_array_elements(batch->'columns') c);
        rest := ARRAY(SELECT c FROM unnest(cols) c WHERE c <> ALL (key));
        ins := format('INSERT INTO %s AS t (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM jsonb_to_recordset($1) AS d(%s)',
                      target,
                      (SELECT string_agg(format('%I', c), ', ') FROM unnest(cols) c),
                      (SELECT string_agg(format('d.%I', c), ', ') FROM unnest(cols) c),
                      keydefs);
        -- a copy page holds keys after every key copied so far, in order:
        -- a plain INSERT, unless somebody wrote such a key into the target
        IF copy THEN
            BEGIN
                EXECUTE ins USING rows;
                GET DIAGNOSTICS m = ROW_COUNT;
                RETURN n + m;
            EXCEPTION WHEN unique_violation THEN
                NULL;           -- rolled back; upserted below
            END;
        END IF;
        EXECUTE ins || format(' ON CONFLICT (%s) DO %s',
                       (SELECT string_agg(format('%I', c), ', ') FROM unnest(key) c),
                       CASE WHEN cardinality(rest) = 0 THEN 'NOTHING'
                            ELSE format('UPDATE SET (%s) = ROW(%s)',
                                        (SELECT string_agg(format('%I', c), ', ') FROM unnest(rest) c),
                                        (SELECT string_agg(format('excluded.%I', c), ', ') FROM unnest(rest) c)) END)
            USING rows;
        GET DIAGNOSTICS m = ROW_COUNT;
        n := n + m;
    END IF;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION interop.apply_changes(regclass, jsonb, bool, bool) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.apply_changes(regclass, jsonb, bool, bool) TO interop_admin, interop_user;

REVOKE ALL ON FUNCTION interop.subscribe(interop.member_id, text, regclass, text, interval),
                       interop.unsubscribe(interop.member_id, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.subscribe(interop.member_id, text, regclass, text, interval),
                          interop.unsubscribe(interop.member_id, text) TO interop_admin, interop_user;

CREATE VIEW interop.stat_subscription AS
SELECT s.id, s.provider, s.service, s.target, s.owner, s.phase,
       s.rows_copied, s.changes_applied, s.batches,
       pg_catalog.clock_timestamp() - s.synced_at AS lag,
       s.synced_at, s.last_pull_at, s.copy_started_at, s.copy_finished_at,
       s.failures, s.last_error, s.next_pull
FROM interop.subscription s
WHERE s.owner = current_user
   OR pg_catalog.pg_has_role(current_user, 'interop_admin', 'MEMBER')
   OR pg_catalog.pg_has_role(current_user, 'interop_auditor', 'MEMBER');
COMMENT ON VIEW interop.stat_subscription IS
    'progress of each subscription: phase, rows copied, changes applied, lag, last error';
GRANT SELECT ON interop.stat_subscription TO interop_admin, interop_user, interop_auditor;
