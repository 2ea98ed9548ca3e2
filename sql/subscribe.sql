-- subscribe.sql: change capture and the SQL surface of subscriptions on one
-- node (pulling crosses the network: test/t/007_subscribe.pl)

-- ---- the provider: publish(..., track_changes => true) ----
CREATE SCHEMA regress_sub;
CREATE TABLE regress_sub.person (id int PRIMARY KEY, name text);
CREATE TABLE regress_sub.pair (a text, b int, v text, PRIMARY KEY (b, a));
CREATE TABLE regress_sub.nokey (id int, name text);
CREATE VIEW regress_sub.person_view AS SELECT * FROM regress_sub.person;

SELECT interop.publish('v', 'regress_sub.person_view', track_changes => true);
SELECT interop.publish('k', 'regress_sub.nokey', track_changes => true);
SELECT interop.publish('c', 'regress_sub.person', filter_columns => '{id}', subject_column => 'id',
                       requires_consent => true, track_changes => true);
CREATE ROLE regress_sub_admin IN ROLE interop_admin;
GRANT USAGE ON SCHEMA regress_sub TO regress_sub_admin;
GRANT SELECT ON regress_sub.person TO regress_sub_admin;
SET ROLE regress_sub_admin;
SELECT interop.publish('p', 'regress_sub.person', track_changes => true);
RESET ROLE;

SELECT interop.publish('person', 'regress_sub.person', track_changes => true);
SELECT interop.publish('pair', 'regress_sub.pair', track_changes => true);
SELECT tgname, tgtype FROM pg_trigger WHERE tgrelid = 'regress_sub.person'::regclass ORDER BY tgname;

-- the keys of every changed row, with the writing transaction
INSERT INTO regress_sub.person VALUES (1, 'one'), (2, 'two'), (3, 'three');
UPDATE regress_sub.person SET name = 'uno' WHERE id = 1;
UPDATE regress_sub.person SET id = 30 WHERE id = 3;
DELETE FROM regress_sub.person WHERE id = 2;
UPDATE regress_sub.person SET name = name WHERE false;
INSERT INTO regress_sub.pair VALUES ('x', 1, 'first');
SELECT source::regclass, key, tx = min(tx) OVER (PARTITION BY source, at) AS one_tx_per_statement
FROM interop.change_log ORDER BY id;
SELECT source::regclass, below > '0' AS set FROM interop.change_pruned ORDER BY 1;

-- TRUNCATE would lose the keys: refused
TRUNCATE regress_sub.person;

-- retention
SELECT interop.prune_changes('1 day');
SELECT interop.prune_changes('0 s');
SELECT count(*) FROM interop.change_log;
SELECT source::regclass, below > '0' AS set FROM interop.change_pruned ORDER BY 1;

-- a second service on the same table keeps the triggers until the last goes
SELECT interop.publish('person2', 'regress_sub.person', track_changes => true);
SELECT interop.unpublish('person');
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'regress_sub.person'::regclass;
SELECT interop.publish('person2', 'regress_sub.person');
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'regress_sub.person'::regclass;
SELECT source::regclass FROM interop.change_pruned ORDER BY 1;
TRUNCATE regress_sub.person;
SELECT interop.unpublish('person2');

-- ---- the consumer: subscribe() ----
SELECT interop.add_peer('MN/GOV/1000001/population', 'https://127.0.0.1:1');
CREATE TABLE regress_sub.copy (id int PRIMARY KEY, name text);
SELECT interop.subscribe(NULL, 'person', 'regress_sub.copy');
SELECT interop.subscribe('MN/GOV/9000009/nobody', 'person', 'regress_sub.copy');
SELECT interop.subscribe('MN/GOV/1000001/population', 'person', 'regress_sub.person_view');
SELECT interop.subscribe('MN/GOV/1000001/population', 'person', 'regress_sub.nokey');
SELECT interop.subscribe('MN/GOV/1000001/population', 'person', 'regress_sub.copy', every => '1 ms');
SELECT interop.subscribe('MN/GOV/1000001/population', 'person', 'regress_sub.nosuch');
CREATE ROLE regress_sub_user IN ROLE interop_user;
GRANT USAGE ON SCHEMA regress_sub TO regress_sub_user;
GRANT SELECT, INSERT ON regress_sub.copy TO regress_sub_user;
SET ROLE regress_sub_user;
SELECT interop.subscribe('MN/GOV/1000001/population', 'person', 'regress_sub.copy');
RESET ROLE;
GRANT UPDATE, DELETE ON regress_sub.copy TO regress_sub_user;
SET ROLE regress_sub_user;
SELECT interop.subscribe('MN/GOV/1000001/population', 'person', 'regress_sub.copy', 'statistics', '5 min') > 0 AS subscribed;
SELECT provider, service, target, owner, phase, rows_copied, changes_applied, lag FROM interop.stat_subscription;
SELECT interop.subscribe('MN/GOV/1000001/population', 'person', 'regress_sub.copy');
SELECT * FROM interop.subscription;
RESET ROLE;
SELECT count(*) FROM interop.stat_subscription;
SET ROLE regress_sub_admin;
SELECT interop.unsubscribe('MN/GOV/1000001/population', 'nosuch');
SELECT interop.unsubscribe('MN/GOV/1000001/population', 'person');
RESET ROLE;
SELECT count(*) FROM interop.subscription;

-- the batch a pull would apply, as the subscription's owner
INSERT INTO regress_sub.copy VALUES (7, 'stale');
SELECT interop.apply_changes('regress_sub.copy',
    '{"key": ["id"], "columns": [{"name": "id"}, {"name": "name"}],
      "upserts": [{"id": 1, "name": "uno"}, {"id": 30, "name": "three"}], "deletes": []}', true);
SELECT interop.apply_changes('regress_sub.copy',
    '{"key": ["id"], "columns": [{"name": "id"}, {"name": "name"}],
      "upserts": [{"id": 1, "name": "one again"}], "deletes": [{"id": 30}, {"id": 99}]}', false);
SELECT * FROM regress_sub.copy ORDER BY id;
SELECT interop.apply_changes('regress_sub.copy',
    '{"key": ["name"], "columns": [], "upserts": [], "deletes": []}', false);
-- a page of a copy is a plain INSERT; a key written into the target
-- meanwhile makes it an upsert, so the page still applies
SELECT interop.apply_changes('regress_sub.copy',
    '{"key": ["id"], "columns": [{"name": "id"}, {"name": "name"}],
      "upserts": [{"id": 40, "name": "forty"}, {"id": 41, "name": "forty-one"}], "deletes": []}', false, true);
INSERT INTO regress_sub.copy VALUES (51, 'written locally');
SELECT interop.apply_changes('regress_sub.copy',
    '{"key": ["id"], "columns": [{"name": "id"}, {"name": "name"}],
      "upserts": [{"id": 50, "name": "fifty"}, {"id": 51, "name": "fifty-one"}], "deletes": []}', false, true);
SELECT * FROM regress_sub.copy ORDER BY id;

SELECT interop.remove_peer('MN/GOV/1000001/population');
SELECT interop.unpublish('pair');
DROP SCHEMA regress_sub CASCADE;
DROP OWNED BY regress_sub_admin, regress_sub_user;
DROP ROLE regress_sub_admin, regress_sub_user;
