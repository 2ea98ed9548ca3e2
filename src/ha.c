/*-------------------------------------------------------------------------
 *
 * ha.c
 *	  interop on PostgreSQL's own replication: what runs on a standby, and
 *	  whether a log record outlives a failover.
 *
 * A hot standby is read-only: the workers do not run there (they start
 * when it is promoted), and every function that writes refuses with
 * RefuseOnStandby() before it touches anything, so that a DBA or an
 * application meets one clear error instead of PostgreSQL's "cannot
 * execute INSERT in a read-only transaction" from deep inside.  What only
 * reads (verify_log(), subject_access_report(), the catalogs, the views)
 * runs there, for auditors.
 *
 * With interop.require_synchronous_log on, nothing is answered unless its
 * log record is durable on the standbys a failover can promote:
 * SynchronousLogProblem() says why it would not be (no
 * synchronous_standby_names, or fewer synchronous standbys streaming than
 * it asks for), and every transaction of the workers commits with
 * synchronous_commit = on, so PostgreSQL's own commit waits for the
 * standbys' flush before the gateway sends an answer or the log writer
 * acknowledges a consumer's record.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "replication/syncrep.h"
#include "replication/walsender_private.h"
#include "storage/lwlock.h"
#include "utils/builtins.h"
#include "utils/guc.h"

bool		interop_require_synchronous_log = false;

/*
 * RefuseOnStandby - an ERROR when this server is a hot standby: what (the
 * function, "interop.seal_log()") writes, and a standby cannot
 */
void
RefuseOnStandby(const char *what)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("%s cannot run on a standby", what),
				 errdetail("This server is in recovery: interop's logs, keys and configuration are written on the primary and reach the standbys by replication."),
				 errhint("Run it on the primary.  A standby serves what only reads: interop.verify_log(), interop.subject_access_report(), the catalogs and the views.")));
}

/* refuse_on_standby(what text): RefuseOnStandby() for the PL/pgSQL functions */
PG_FUNCTION_INFO_V1(interop_refuse_on_standby);
Datum
interop_refuse_on_standby(PG_FUNCTION_ARGS)
{
	RefuseOnStandby(PG_ARGISNULL(0) ? "this function" : text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/*
 * SynchronousLogProblem - with interop.require_synchronous_log on, why a
 * log record committed now would not be durable on a standby (palloc'd),
 * or NULL when it would be.  Without the setting, NULL.
 *
 * Standbys are counted as PostgreSQL counts them for its commit wait
 * (SyncRepGetCandidateStandbys: connected, streaming, named in
 * synchronous_standby_names).  One that leaves between this check and the
 * commit makes the commit wait until it, or another, is back: the answer
 * is then late, never undurable.
 */
char *
SynchronousLogProblem(void)
{
	SyncRepStandbyData *standbys;
	int			streaming;
	int			needed;

	if (!interop_require_synchronous_log)
		return NULL;
	if (SyncRepStandbyNames == NULL || SyncRepStandbyNames[0] == '\0')
		return pstrdup("interop.require_synchronous_log is on and synchronous_standby_names is empty: no standby confirms a log record before it is answered");
	needed = SyncRepConfig != NULL ? SyncRepConfig->num_sync : 1;
	streaming = SyncRepGetCandidateStandbys(&standbys);
	pfree(standbys);
	if (streaming < needed)
		return psprintf("interop.require_synchronous_log is on and %d of the %d synchronous standbys that synchronous_standby_names (\"%s\") asks for %s streaming",
						streaming, needed, SyncRepStandbyNames, streaming == 1 ? "is" : "are");
	return NULL;
}

/*
 * RequireSynchronousLog - an ERROR with SynchronousLogProblem()'s reason:
 * for interop.query() and the other calls whose record must be durable
 */
void
RequireSynchronousLog(const char *what)
{
	char	   *problem = SynchronousLogProblem();

	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s refused: its log record would not be durable on a standby", what),
				 errdetail("%s.", problem),
				 errhint("Start or reconnect the synchronous standby (pg_stat_replication shows them), or set interop.require_synchronous_log = off to accept that a failover can lose the newest records.")));
}

/*
 * SynchronousCommitForLog - in a worker's transaction: commit with
 * synchronous_commit = on whatever the server's default, when the log
 * must be durable on the standbys; and at least with a local flush when
 * the default is off, since what a worker commits (a consumer's record, an
 * answer delivered and its record) is relied on or seen at once.  Reset at
 * the transaction's end.  The gateway's group commit turns the flush off
 * after this and flushes itself before any answer leaves.
 */
void
SynchronousCommitForLog(void)
{
	if (interop_require_synchronous_log)
		(void) set_config_option("synchronous_commit", "on", PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	else if (synchronous_commit == SYNCHRONOUS_COMMIT_OFF)
		(void) set_config_option("synchronous_commit", "local", PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * LastCommitDurable - with interop.require_synchronous_log on: whether the
 * last commit of this process is flushed on the synchronous standbys.
 *
 * PostgreSQL's commit waits for them, but it stops waiting, with the
 * transaction committed here, when the postmaster dies (kill -9 of the
 * primary, which a failover manager does), on a cancel, or on SIGTERM; a
 * backend then sends its client nothing.  A worker must not send the
 * answer either: it asks this before it does, and answers 503 instead.
 * The position synchronous standbys confirmed is the one the commit wait
 * itself compares with (WalSndCtl, under SyncRepLock).
 */
bool
LastCommitDurable(void)
{
	XLogRecPtr	confirmed;

	if (!interop_require_synchronous_log || XactLastCommitEnd == InvalidXLogRecPtr)
		return true;
	if (ProcDiePending)
		return false;
	LWLockAcquire(SyncRepLock, LW_SHARED);
	confirmed = WalSndCtl->lsn[SYNC_REP_WAIT_FLUSH];
	LWLockRelease(SyncRepLock);
	return confirmed >= XactLastCommitEnd;
}
