/*-------------------------------------------------------------------------
 *
 * sync.c
 *	  The sync worker: one background worker per cluster, in
 *	  interop.database.  It seals the logs every interop.seal_interval,
 *	  prunes the change log of tracked tables every interop.sync_interval,
 *	  and runs the transfers of src/async.c: asynchronous queries, peer
 *	  catalogs, CRLs and subscriptions (docs/architecture.md).
 *
 * It sleeps on its latch between rounds (no busy loop), reloads the
 * configuration on SIGHUP, exits on SIGTERM (even while a seal waits for a
 * long transaction that writes a log), and is restarted by the
 * postmaster one second after a crash.  A round that fails is logged and
 * the next one tries again.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

/*
 * The sync worker serves every subscription, delivery and seal of the node
 * alone: it never waits long for a lock that a session holds (an auditor's
 * open transaction, a DBA's LOCK TABLE).  A round that would is skipped,
 * logged and tried again.
 */
#define SYNC_LOCK_TIMEOUT 5000

int			interop_seal_interval = 60000;
int			interop_sync_interval = 300000;
int			interop_change_retention = 7 * 24 * 60;	/* minutes */

/* RegisterSyncWorker - the sync worker, when the library is preloaded */
void
RegisterSyncWorker(void)
{
	RegisterInteropWorker("SyncMain", "interop sync", "interop sync", (Datum) 0);
}

/* Seal - the body of a sealing round, in its transaction */
static void
Seal(void)
{
	int64		n = 0;

	/* nothing to sign with before the node has an identity */
	if (SPI_execute("SELECT 1 FROM interop.node", true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		n = SealLogs();
	/* the gateway's view of the seals waiting for a timestamp */
	PublishTimestampState();
	if (n > 0)
		elog(DEBUG1, "interop sync: sealed " INT64_FORMAT " records", n);
}

/* Prune - the change log older than interop.change_retention goes */
static void
Prune(void)
{
	Datum		arg = Int32GetDatum(interop_change_retention);
	Oid			type = INT4OID;

	if (SPI_execute_with_args("SELECT interop.prune_changes($1 * interval '1 min')", 1, &type, &arg,
							  NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not prune the change log");
}

/* RunRound - body in a worker transaction of its own; a failure is logged */
static void
RunRound(void (*body) (void), const char *activity)
{
	MemoryContext cxt = CurrentMemoryContext;

	pgstat_report_activity(STATE_RUNNING, activity);
	PG_TRY();
	{
		BeginWorkerTransaction();
		body();
		EndWorkerTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		if (edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE)
			ereport(LOG,
					(errmsg("interop sync: %s skipped: %s", activity, edata->message),
					 errdetail("The sync worker waits at most %d ms for a lock a session holds, then goes on with its other work.",
							   SYNC_LOCK_TIMEOUT),
					 errhint("See pg_locks for the session; the next round tries again.")));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* AsyncRound - deliveries; after an ERROR, start over (nothing is lost) */
static void
AsyncRound(long *timeout, bool woken)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		TransferRound(timeout, woken);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		TransferReset();
		*timeout = 1000;
	}
	PG_END_TRY();
}

/* SyncDetach - the worker is gone: nobody to wake */
static void
SyncDetach(int code, Datum arg)
{
	SetSyncLatch(NULL);
}

/* SyncMain - entry point of the sync worker */
void
SyncMain(Datum arg)
{
	TimestampTz next_seal;
	TimestampTz next_prune;
	bool		installed = false;
	TimestampTz installed_checked = 0;
	bool		woken = true;
	int			rc;

	/* SIGTERM: exit at the next CHECK_FOR_INTERRUPTS, a seal in progress rolled back */
	WorkerSetSigterm(die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	WorkerConnect(InvalidOid, "interop sync");
	SetConfigOption("lock_timeout", CppAsString2(SYNC_LOCK_TIMEOUT), PGC_SUSET, PGC_S_OVERRIDE);
	before_shmem_exit(SyncDetach, (Datum) 0);
	SetSyncLatch(MyLatch);

	next_seal = next_prune = GetCurrentTimestamp();
	for (;;)
	{
		long		timeout = -1;
		TimestampTz now = GetCurrentTimestamp();

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			next_prune = now;	/* with the new retention, at once */
		}
		/* installed, or dropped: looked at every 5 s, not at every round */
		if (!installed || now - installed_checked >= 5 * USECS_PER_SEC)
		{
			installed = ExtensionInstalled();
			installed_checked = now;
		}

		if (!installed)
			timeout = 5000L;	/* CREATE EXTENSION has no hook: look again */
		else if (interop_seal_interval > 0)
		{
			TimestampTz seal_now = GetCurrentTimestamp();

			if (seal_now >= next_seal)
			{
				RunRound(Seal, "sealing the logs");
				seal_now = GetCurrentTimestamp();
				next_seal = TimestampTzPlusMilliseconds(seal_now, interop_seal_interval);
			}
			timeout = Max(1L, (long) ((next_seal - seal_now) / 1000));
		}
		if (installed && GetCurrentTimestamp() >= next_prune)
		{
			if (interop_change_retention > 0)
				RunRound(Prune, "pruning the change log");
			next_prune = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), interop_sync_interval);
		}
		if (installed)
			AsyncRound(&timeout, woken);
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | (timeout >= 0 ? WL_TIMEOUT : 0),
					   timeout, PG_WAIT_EXTENSION);
		woken = (rc & WL_LATCH_SET) != 0;
		ResetLatch(MyLatch);
	}
}
