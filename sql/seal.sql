-- seal.sql: sealing, verification and the append-only rules on one node
-- (the records come from the earlier tests: failed calls, consents)
SELECT count(*) > 0 AS has_records FROM interop.message_log;
SELECT interop.seal_log() > 0 AS sealed;
SELECT interop.seal_log() AS sealed_again;
SELECT * FROM interop.verify_log();
SELECT log, kind, after_id, record_count = (upto_id - after_id) AS no_gaps,
       length(leaves) = 40 * record_count AS leaves_ok, prev IS NULL AS first
FROM interop.log_seal ORDER BY id;

-- append-only, for a superuser too
UPDATE interop.message_log SET purpose = 'x';
DELETE FROM interop.consent_log;
TRUNCATE interop.log_seal;

-- a seal needs to see every committed record
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT interop.seal_log();
ROLLBACK;

SELECT interop.prune_log(NULL);
SELECT interop.prune_log('-infinity') AS pruned;

-- privileges: the auditor verifies; a user does neither
CREATE ROLE regress_seal_user IN ROLE interop_user;
CREATE ROLE regress_seal_audit IN ROLE interop_auditor;
SET ROLE regress_seal_audit;
SELECT count(*) FROM interop.verify_log();
SELECT interop.prune_log(now());
SET ROLE regress_seal_user;
SELECT interop.seal_log();
SELECT count(*) FROM interop.log_seal;
RESET ROLE;
DROP ROLE regress_seal_user, regress_seal_audit;
