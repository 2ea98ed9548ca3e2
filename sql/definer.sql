-- definer.sql: code that a non-superuser defines never runs with the
-- privileges of interop's SECURITY DEFINER functions (their owner is the
-- superuser that created the extension).  Each case plants a trap that
-- records who ran it and tries to make its author a superuser.

CREATE ROLE regress_mallory LOGIN IN ROLE interop_admin;
CREATE SCHEMA regress_mal AUTHORIZATION regress_mallory;
-- the trap: records the role it runs as, and tries to promote mallory
CREATE TABLE regress_mal.seen (role name, superuser bool);
GRANT INSERT, SELECT ON regress_mal.seen TO PUBLIC;
ALTER TABLE regress_mal.seen OWNER TO regress_mallory;

SET ROLE regress_mallory;
CREATE FUNCTION regress_mal.trap() RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO regress_mal.seen SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
    BEGIN
        ALTER ROLE regress_mallory SUPERUSER;
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    RETURN true;
END $$;

-- ---- change capture: a key type with a cast to json of the admin's own ----
CREATE TYPE regress_mal.mood AS ENUM ('calm', 'cross');
CREATE FUNCTION regress_mal.mood_json(regress_mal.mood) RETURNS json
LANGUAGE plpgsql AS $$ BEGIN PERFORM regress_mal.trap(); RETURN to_json($1::text); END $$;
CREATE CAST (regress_mal.mood AS json) WITH FUNCTION regress_mal.mood_json(regress_mal.mood);
CREATE FUNCTION regress_mal.mood_jsonb(regress_mal.mood) RETURNS jsonb
LANGUAGE plpgsql AS $$ BEGIN PERFORM regress_mal.trap(); RETURN to_jsonb($1::text); END $$;
CREATE CAST (regress_mal.mood AS jsonb) WITH FUNCTION regress_mal.mood_jsonb(regress_mal.mood);
-- and a composite key part whose type is the admin's too
CREATE TABLE regress_mal.tracked (m regress_mal.mood, n int, v text, PRIMARY KEY (m, n));
SELECT interop.publish('mood', 'regress_mal.tracked', track_changes => true);
INSERT INTO regress_mal.tracked VALUES ('calm', 1, 'a'), ('cross', 2, 'b');
UPDATE regress_mal.tracked SET v = 'c' WHERE n = 2;
DELETE FROM regress_mal.tracked WHERE n = 1;
RESET ROLE;

-- the keys were captured without calling the casts
SELECT key FROM interop.change_log WHERE source = 'regress_mal.tracked'::regclass ORDER BY id;
SELECT role, superuser FROM regress_mal.seen;
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_mallory';

-- the casts are still the admin's to use, as the admin
SET ROLE regress_mallory;
SELECT 'calm'::regress_mal.mood::json AS own_cast;
RESET ROLE;
SELECT role, superuser FROM regress_mal.seen;
TRUNCATE regress_mal.seen;

-- a key whose text form depends on the writer's settings is captured the same way
SET ROLE regress_mallory;
CREATE TABLE regress_mal.dated (d timestamptz PRIMARY KEY, v text);
SELECT interop.publish('dated', 'regress_mal.dated', track_changes => true);
SET DateStyle = 'SQL, DMY';
SET TimeZone = 'Asia/Ulaanbaatar';
INSERT INTO regress_mal.dated VALUES ('2026-03-04 05:06:07+00', 'x');
RESET DateStyle;
RESET TimeZone;
RESET ROLE;
SELECT key FROM interop.change_log WHERE source = 'regress_mal.dated'::regclass;

-- ---- key rotation: nothing of the admin's runs inside rotate_key() ----
DELETE FROM regress_mal.seen;
SET ROLE regress_mallory;
CREATE FUNCTION regress_mal.trap_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_mal.trap(); RETURN NULL; END $$;
CREATE TRIGGER regress_trap AFTER UPDATE ON interop.node FOR EACH ROW EXECUTE FUNCTION regress_mal.trap_trigger();
-- a now() of the admin's, ahead of pg_catalog on the caller's search_path
CREATE FUNCTION regress_mal.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_mal.trap(); RETURN pg_catalog.clock_timestamp(); END $$;
SET search_path = regress_mal, pg_catalog;
SELECT interop.rotate_key() LIKE '-----BEGIN CERTIFICATE REQUEST-----%' AS csr;
RESET search_path;
RESET ROLE;
SELECT count(*) AS trapped FROM regress_mal.seen;
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_mallory';
SELECT pending_public_key IS NOT NULL AS pending FROM interop.node;

-- ---- evidence: nothing of the admin's runs inside interop.evidence() ----
-- operators and functions of the admin's on built-in types, ahead of
-- pg_catalog on her search_path: evidence() would run them as its owner
-- if it took the caller's path
DELETE FROM regress_mal.seen;
INSERT INTO interop.message_log (at, direction, peer, service, subject, status, duration_ms)
VALUES (now(), 'in', 'MN/GOV/2000002/tax', 'person', 'P3', 200, 3)
RETURNING id AS ev_id \gset
SELECT interop.seal_log() > 0 AS sealed;
SET ROLE regress_mallory;
CREATE FUNCTION regress_mal.int8eq(bigint, bigint) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_mal.trap(); RETURN pg_catalog.int8eq($1, $2); END $$;
CREATE OPERATOR regress_mal.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = regress_mal.int8eq);
CREATE FUNCTION regress_mal.int8ge(bigint, bigint) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_mal.trap(); RETURN pg_catalog.int8ge($1, $2); END $$;
CREATE OPERATOR regress_mal.>= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = regress_mal.int8ge);
CREATE FUNCTION regress_mal.encode(bytea, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_mal.trap(); RETURN pg_catalog.encode($1, $2); END $$;
CREATE FUNCTION regress_mal.to_char(timestamp, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_mal.trap(); RETURN pg_catalog.to_char($1, $2); END $$;
SET search_path = regress_mal, pg_catalog;
SELECT (interop.evidence(:ev_id)->'record'->>'id')::bigint OPERATOR(pg_catalog.=) :ev_id AS evidence;
SELECT count(*) AS trapped FROM regress_mal.seen;
-- the traps are live: her own query runs them, as her
SELECT 1::bigint = 1::bigint AS own_operator;
RESET search_path;
RESET ROLE;
SELECT role, superuser FROM regress_mal.seen;
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_mallory';

SELECT interop.unpublish('mood'), interop.unpublish('dated');
DROP SCHEMA regress_mal CASCADE;
DROP ROLE regress_mallory;
