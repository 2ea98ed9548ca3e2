-- publishing: services, access grants (deny by default), admin history
\set SHOW_CONTEXT never

CREATE ROLE regress_registrar LOGIN IN ROLE interop_admin;
CREATE ROLE regress_clerk LOGIN IN ROLE interop_admin;
CREATE ROLE regress_reader LOGIN IN ROLE interop_auditor;
CREATE SCHEMA registry;
CREATE TABLE registry.person (id text PRIMARY KEY, name text, birth date, address text, secret_note text);
CREATE VIEW registry.person_address AS SELECT id, name, address FROM registry.person;
GRANT USAGE ON SCHEMA registry TO regress_registrar, regress_clerk;
GRANT SELECT ON registry.person_address TO regress_registrar;

SET ROLE regress_registrar;
SELECT interop.publish('person_address', 'registry.person_address', filter_columns => '{id}',
                       subject_column => 'id', requires_consent => true, max_rows => 10,
                       description => 'name and address of a person');
SELECT name, source, filter_columns, subject_column, requires_consent, max_rows, owner FROM interop.service;

-- bad input: each gets its own error
SELECT interop.publish('Person Address', 'registry.person_address');
SELECT interop.publish('../etc/passwd', 'registry.person_address');
SELECT interop.publish('x', 'registry.nonexistent');
SELECT interop.publish('x', 'registry.person_address', filter_columns => '{idd}');
SELECT interop.publish('x', 'registry.person_address', filter_columns => '{id,id}');
SELECT interop.publish('x', 'registry.person_address', filter_columns => '{"id; DROP TABLE registry.person"}');
SELECT interop.publish('x', 'registry.person_address', filter_columns => '{name}', subject_column => 'id');
SELECT interop.publish('x', 'registry.person_address', requires_consent => true);
SELECT interop.publish('x', 'registry.person_address', max_rows => 0);
SELECT interop.publish('x', 'registry.person_address', track_changes => true);
SELECT interop.publish('x', 'registry.person_id_seq_that_is_not_here');
SELECT interop.publish('x', 'pg_catalog.pg_class_oid_index');
-- a role cannot publish what it cannot read
SELECT interop.publish('person_all', 'registry.person');
RESET ROLE;

-- deny by default; grants with purposes and legal basis
SET ROLE regress_registrar;
SELECT count(*) AS grants FROM interop.access_grant;
SELECT interop.grant_access('person_address', 'MN/GOV/2000001/tax', '{tax assessment,audit,audit}', 'Tax Act §12');
SELECT interop.grant_access('person_address', 'mn/gov/3000001/portal');
SELECT interop.grant_access('no_such_service', 'MN/GOV/2000001/tax');
SELECT interop.grant_access('person_address', 'MN/GOV/2000001/tax', '{""}');
SELECT interop.grant_access('person_address', 'MN GOV');
SELECT service, consumer, purposes, legal_basis, granted_by FROM interop.access_grant ORDER BY consumer;
-- a second grant to the same consumer replaces the first
SELECT interop.grant_access('person_address', 'MN/GOV/2000001/tax', '{tax assessment}', 'Tax Act §12');
SELECT interop.revoke_access('person_address', 'MN/GOV/3000001/portal');
SELECT interop.revoke_access('person_address', 'MN/GOV/3000001/portal');
SELECT service, consumer, purposes FROM interop.access_grant;
RESET ROLE;

-- direct DML is held to the same rules: the owner is whoever writes
SET ROLE regress_clerk;
UPDATE interop.service SET owner = 'postgres' WHERE name = 'person_address';
RESET ROLE;
GRANT SELECT ON registry.person_address TO regress_clerk;
SET ROLE regress_clerk;
UPDATE interop.service SET owner = 'postgres', max_rows = 20 WHERE name = 'person_address';
SELECT name, owner, max_rows FROM interop.service;
\set VERBOSITY terse
INSERT INTO interop.service (name, source) VALUES ('bad name', 'registry.person_address');
\set VERBOSITY default
-- and the history cannot be rewritten
DELETE FROM interop.admin_history;
UPDATE interop.admin_history SET role = 'nobody';
INSERT INTO interop.admin_history (role, session_role, object, action) VALUES ('x', 'x', 'x', 'x');
RESET ROLE;

-- dry_run: what the gateway would answer, run with the publisher's privileges
RESET ROLE;
INSERT INTO registry.person VALUES
    ('38001010000', 'Bat', '1980-01-01', 'Ulaanbaatar, 1st khoroo', 'do not share'),
    ('38001010001', 'Dorj', '1980-01-02', 'Darkhan', 'do not share'),
    ('38001010002', 'Sarnai', '1980-01-03', E'Erdenet\n"quoted"', NULL);
CREATE TABLE registry.vehicle (plate text, owner_id text, seats int, registered date);
INSERT INTO registry.vehicle SELECT 'UB' || i, '38001010000', 2 + i % 5, date '2020-01-01' + i FROM generate_series(1, 30) i;
GRANT SELECT ON registry.vehicle TO regress_registrar;
SET ROLE regress_registrar;
SELECT interop.publish('vehicles', 'registry.vehicle', filter_columns => '{owner_id,seats}', max_rows => 5);
SELECT interop.publish('address_open', 'registry.person_address', filter_columns => '{id}');
SELECT interop.grant_access('vehicles', 'MN/GOV/2000001/tax', '{tax assessment}');
SELECT interop.grant_access('address_open', 'MN/GOV/2000001/tax');

SELECT interop.dry_run('address_open', 'MN/GOV/2000001/tax', '{"id":"38001010000"}');
SELECT interop.dry_run('address_open', 'MN/GOV/2000001/tax', '{"id":"38001010002"}') -> 'rows';
SELECT interop.dry_run('address_open', 'MN/GOV/2000001/tax', '{"id":"nobody"}');
-- more rows than max_rows: truncated
SELECT jsonb_array_length(a->'rows') AS rows, a->'truncated' AS truncated
FROM interop.dry_run('vehicles', 'MN/GOV/2000001/tax', '{"owner_id":"38001010000"}', 'tax assessment') AS a;
-- numbers are bound to the column's type
SELECT interop.dry_run('vehicles', 'MN/GOV/2000001/tax', '{"owner_id":"38001010000","seats":3}', 'tax assessment') -> 'rows';
SELECT interop.dry_run('vehicles', 'MN/GOV/2000001/tax', '{"seats":"3"}', 'tax assessment') -> 'rows' -> 0;

-- refusals, each with the wire status and code the gateway would send
SELECT interop.dry_run('no_such', 'MN/GOV/2000001/tax');
SELECT interop.dry_run('address_open', 'MN/GOV/9999999/stranger', '{"id":"38001010000"}');
SELECT interop.dry_run('vehicles', 'MN/GOV/2000001/tax', '{"owner_id":"38001010000"}');
SELECT interop.dry_run('vehicles', 'MN/GOV/2000001/tax', '{"owner_id":"38001010000"}', 'marketing');
-- a service with requires_consent: no consent of this subject is recorded (see consent.sql)
SELECT interop.publish('address_consent', 'registry.person_address', filter_columns => '{id}',
                       subject_column => 'id', requires_consent => true);
SELECT interop.grant_access('address_consent', 'MN/GOV/2000001/tax');
SELECT interop.dry_run('address_consent', 'MN/GOV/2000001/tax', '{"id":"38001010000"}', 'tax assessment');
SELECT interop.dry_run('vehicles', 'MN/GOV/2000001/tax', '{"plate":"UB1"}', 'tax assessment');
SELECT interop.dry_run('vehicles', 'MN/GOV/2000001/tax', '{"seats":"three"}', 'tax assessment');
SELECT interop.dry_run('vehicles', 'MN/GOV/2000001/tax', '{"seats":99999999999}', 'tax assessment');
SELECT interop.dry_run('vehicles', 'MN/GOV/2000001/tax', '{"seats":null}', 'tax assessment');
SELECT interop.dry_run('vehicles', 'MN/GOV/2000001/tax', '{"seats":[1,2]}', 'tax assessment');
SELECT interop.dry_run('vehicles', 'MN/GOV/2000001/tax', '[1]', 'tax assessment');
-- SQL in values is only ever a value
SELECT interop.dry_run('address_open', 'MN/GOV/2000001/tax', $${"id":"x' OR '1'='1"}$$);
SELECT interop.dry_run('address_open', 'MN/GOV/2000001/tax', $${"id; DROP TABLE registry.person; --":"1"}$$);
RESET ROLE;
SELECT count(*) AS persons_still_there FROM registry.person;
-- a published source cannot be dropped, directly or by CASCADE
CREATE TABLE registry.scratch (k text);
GRANT SELECT ON registry.scratch TO regress_registrar;
SET ROLE regress_registrar;
SELECT interop.publish('scratch', 'registry.scratch', filter_columns => '{k}');
RESET ROLE;
DROP TABLE registry.scratch;
DROP SCHEMA registry CASCADE;
ALTER TABLE registry.scratch RENAME TO scratch2;
SET ROLE regress_registrar;
SELECT source FROM interop.service WHERE name = 'scratch';
SELECT interop.unpublish('scratch');
RESET ROLE;
DROP TABLE registry.scratch2;
-- only the publisher may dry-run its service
SET ROLE regress_clerk;
SELECT interop.dry_run('vehicles', 'MN/GOV/2000001/tax', '{}', 'tax assessment');
RESET ROLE;
SET ROLE regress_registrar;

-- unpublish removes the grants; the history keeps everything
SET ROLE regress_registrar;
SELECT interop.unpublish('person_address');
SELECT interop.unpublish('person_address');
SELECT interop.unpublish('vehicles');
SELECT interop.unpublish('address_open');
SELECT interop.unpublish('address_consent');
SELECT count(*) AS grants_left FROM interop.access_grant;
RESET ROLE;
SET ROLE regress_reader;
SELECT role, object, action,
       old_value->>'name' AS old_service, new_value->>'name' AS new_service,
       coalesce(new_value, old_value)->>'consumer' AS consumer,
       old_value->>'max_rows' AS old_rows, new_value->>'max_rows' AS new_rows,
       new_value->>'owner' AS new_owner
FROM interop.admin_history WHERE coalesce(new_value, old_value)->>'service' IS DISTINCT FROM 'vehicles'
  AND coalesce(new_value, old_value)->>'name' IS DISTINCT FROM 'vehicles'
  AND coalesce(new_value, old_value)->>'service' IS DISTINCT FROM 'address_open'
  AND coalesce(new_value, old_value)->>'name' IS DISTINCT FROM 'address_open'
  AND coalesce(new_value, old_value)->>'service' IS DISTINCT FROM 'address_consent'
  AND coalesce(new_value, old_value)->>'name' IS DISTINCT FROM 'address_consent'
  AND coalesce(new_value, old_value)->>'service' IS DISTINCT FROM 'scratch'
  AND coalesce(new_value, old_value)->>'name' IS DISTINCT FROM 'scratch'
ORDER BY id;
SELECT interop.publish('y', 'registry.person_address');
RESET ROLE;

DROP SCHEMA registry CASCADE;
DROP ROLE regress_registrar, regress_clerk, regress_reader;
