/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  What every background worker of interop shares: registering it,
 *	  knowing whether the extension is installed yet, and the transactions
 *	  it runs, with the role it runs them as.
 *
 * The privilege rule (docs/security.md, "Who runs what"):
 *
 *	  1. A worker connects as the bootstrap superuser (PostgreSQL 15 cannot
 *		 connect a background worker as a role without LOGIN), but every
 *		 transaction it runs is run as interop_worker, a role the extension
 *		 creates without any privilege beyond what the workers need on
 *		 interop's own tables.  The switch is made with
 *		 SECURITY_LOCAL_USERID_CHANGE, so nothing evaluated inside can SET
 *		 ROLE or SET SESSION AUTHORIZATION its way back.  A worker refuses
 *		 to run when interop_worker has been made a superuser.
 *	  2. Whatever a non-superuser can define (types' input functions,
 *		 domains' checks, casts, operators, functions, triggers, policies,
 *		 defaults, index expressions of their tables) is evaluated only
 *		 after BecomeRole() to the publisher or the subscriber, which adds
 *		 SECURITY_RESTRICTED_OPERATION as PostgreSQL does for maintenance
 *		 commands.
 *	  3. SECURITY DEFINER functions touch only interop's own tables and
 *		 built-in types (each .sql file beside the C says so where it defines one).
 *
 * So a mistake in (2) runs user code as interop_worker, never as a
 * superuser.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include <signal.h>

#include "access/xact.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_database.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"

#define WORKER_ROLE "interop_worker"

/*
 * Coming back by themselves.  The workers are static background workers,
 * restarted a second after they exit with a code other than 0.
 *
 *	- Asked to stop by anyone but the postmaster (DROP DATABASE ... WITH
 *	  (FORCE), pg_terminate_backend()), a worker exits with 1, so it starts
 *	  again; asked by the postmaster (a shutdown), with 0.
 *	- interop.database missing (never made, or dropped): connecting to it
 *	  fails once, with PostgreSQL's own FATAL; the worker's next starts do
 *	  not try again but connect to no database, log once that they wait,
 *	  look in pg_database every 5 s, and exit to be started again, connected,
 *	  when the database is there.
 */
typedef struct WorkerShared
{
	pg_atomic_uint32 database_missing;	/* a worker could not connect */
	pg_atomic_uint32 waiting_logged;	/* ... and one said so */
} WorkerShared;

static WorkerShared *worker_shared = NULL;
static bool connected = false;
static volatile sig_atomic_t sigterm_sender = 0;
static volatile sig_atomic_t committing = false;
static volatile sig_atomic_t die_set_here = false;
static pqsigfunc worker_sigterm = NULL;

/* the user and security context a worker transaction started with */
static Oid	saved_userid = InvalidOid;
static int	saved_sec_context = 0;
static bool dropped = false;

/*
 * RegisterInteropWorker - a static background worker of this library in
 * interop.database, restarted a second after it exits with an error
 */
void
RegisterInteropWorker(const char *function, const char *name, const char *type, Datum arg)
{
	BackgroundWorker w;

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = 1;
	snprintf(w.bgw_library_name, BGW_MAXLEN, "interop");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(w.bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(w.bgw_type, BGW_MAXLEN, "%s", type);
	w.bgw_main_arg = arg;
	RegisterBackgroundWorker(&w);
}

Size
WorkerShmemSize(void)
{
	return sizeof(WorkerShared);
}

void
WorkerShmemInit(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	worker_shared = ShmemInitStruct("interop workers", sizeof(WorkerShared), &found);
	if (!found)
	{
		pg_atomic_init_u32(&worker_shared->database_missing, 0);
		pg_atomic_init_u32(&worker_shared->waiting_logged, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* WorkerSigterm - note who sent SIGTERM, then the worker's own handler */
static void
WorkerSigterm(int signo, siginfo_t *info, void *context)
{
	sigterm_sender = info != NULL ? info->si_pid : 0;
	/*
	 * A commit waiting for a synchronous standby looks only at
	 * ProcDiePending: without it the worker would wait for a standby that
	 * may never come (a switchover stops replication first), and hold up
	 * the shutdown.  EndWorkerTransaction takes it back after the commit.
	 */
	if (committing && !ProcDiePending)
	{
		die_set_here = true;
		ProcDiePending = true;
		InterruptPending = true;
	}
	worker_sigterm(signo);
}

/*
 * WorkerSetSigterm - handler for SIGTERM, told apart by its sender: see
 * WorkerExit()
 */
void
WorkerSetSigterm(pqsigfunc handler)
{
	struct sigaction act;

	worker_sigterm = handler;
	memset(&act, 0, sizeof(act));
	act.sa_sigaction = WorkerSigterm;
	sigemptyset(&act.sa_mask);
	act.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGTERM, &act, NULL);
}

/*
 * WorkerExit - a worker that was asked to stop leaves: for good when the
 * postmaster asked (a shutdown), to be started again when another process
 * did (DROP DATABASE ... WITH (FORCE), pg_terminate_backend())
 */
void
WorkerExit(void)
{
	if (sigterm_sender != 0 && sigterm_sender != PostmasterPid)
	{
		ereport(LOG,
				(errmsg("%s was stopped by process %d and starts again", MyBgworkerEntry->bgw_name,
						(int) sigterm_sender)));
		proc_exit(1);
	}
	proc_exit(0);
}

/* ConnectFailed - at exit: if the connection was never made, say so */
static void
ConnectFailed(int code, Datum arg)
{
	if (!connected && worker_shared != NULL)
		pg_atomic_write_u32(&worker_shared->database_missing, 1);
}

/*
 * DatabaseExists - is interop.database in pg_database?  Connected to no
 * database, only shared catalogs can be read, and without their indexes:
 * a plain scan, as the autovacuum launcher lists databases.
 */
static bool
DatabaseExists(void)
{
	bool		found = false;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (!found && (tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
		found = strcmp(NameStr(((Form_pg_database) GETSTRUCT(tup))->datname), interop_database) == 0;
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return found;
}

/*
 * WaitForDatabase - a worker whose database was missing: connected to no
 * database, it looks for it every 5 s, and exits when it is there, to be
 * started again and connect.  Never returns.
 */
static void
WaitForDatabase(const char *appname)
{
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname(appname);
	for (;;)
	{
		if (DatabaseExists())
		{
			pg_atomic_write_u32(&worker_shared->database_missing, 0);
			pg_atomic_write_u32(&worker_shared->waiting_logged, 0);
			ereport(LOG, (errmsg("%s: database \"%s\" exists now, connecting", MyBgworkerEntry->bgw_name,
								 interop_database)));
			proc_exit(1);
		}
		if (pg_atomic_exchange_u32(&worker_shared->waiting_logged, 1) == 0)
			ereport(LOG,
					(errmsg("interop workers are waiting: database \"%s\" does not exist", interop_database),
					 errdetail("interop.database names the database where CREATE EXTENSION interop runs."),
					 errhint("Create the database, or set interop.database and restart the server; the workers look again every 5 s.")));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 5000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		if (sigterm_sender != 0)
			WorkerExit();
	}
}

/*
 * WorkerConnect - what every worker does once its signal handlers are set:
 * unblock signals, connect to dboid (InvalidOid: interop.database, waiting
 * for it if it was missing), pin the search_path that the extension's own
 * functions use (nothing a user can write is on it), and show appname.
 */
void
WorkerConnect(Oid dboid, const char *appname)
{
	BackgroundWorkerUnblockSignals();
	if (OidIsValid(dboid))
		BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	else
	{
		if (worker_shared != NULL && pg_atomic_read_u32(&worker_shared->database_missing) != 0)
			WaitForDatabase(appname);
		before_shmem_exit(ConnectFailed, (Datum) 0);
		BackgroundWorkerInitializeConnection(interop_database, NULL, 0);
	}
	connected = true;
	SetConfigOption("search_path", "pg_catalog, interop", PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname(appname);
}

/*
 * ExtensionInstalled - whether interop is installed in this database, in a
 * transaction of its own (CREATE EXTENSION has no hook: workers look)
 */
bool
ExtensionInstalled(void)
{
	bool		found;

	StartTransactionCommand();
	found = OidIsValid(get_extension_oid("interop", true));
	CommitTransactionCommand();
	return found;
}

/* WorkerRole - the role worker transactions run as, checked */
static Oid
WorkerRole(void)
{
	Oid			role = get_role_oid(WORKER_ROLE, true);

	if (!OidIsValid(role))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" does not exist", WORKER_ROLE),
				 errdetail("The workers of interop run their transactions as this role."),
				 errhint("CREATE EXTENSION interop creates it; after an update of the library, run ALTER EXTENSION interop UPDATE.")));
	if (superuser_arg(role))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" must not be a superuser", WORKER_ROLE),
				 errdetail("The workers evaluate requests from other agencies; they run as a role that can reach interop's tables and nothing else."),
				 errhint("ALTER ROLE %s NOSUPERUSER;", WORKER_ROLE)));
	return role;
}

/*
 * BeginWorkerTransaction - in a background worker: a transaction with a
 * snapshot, run as interop_worker, connected to SPI.  EndWorkerTransaction
 * commits it; an ERROR in between is cleaned up by AbortCurrentTransaction(),
 * which also gives the worker its own identity back.
 */
void
BeginWorkerTransaction(void)
{
	committing = false;			/* a commit that failed left it set */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SynchronousCommitForLog();
	GetUserIdAndSecContext(&saved_userid, &saved_sec_context);
	SetUserIdAndSecContext(WorkerRole(), saved_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	dropped = true;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
EndWorkerTransaction(void)
{
	/* the CAs and CRL distribution points of chains verified meanwhile */
	bool		new_sources = RecordSeenCertificates() > 0;

	SPI_finish();
	PopActiveSnapshot();
	if (dropped)
		SetUserIdAndSecContext(saved_userid, saved_sec_context);
	dropped = false;
	committing = true;
	/* asked to stop before this commit: it must not wait for a standby either */
	if (sigterm_sender != 0 && !ProcDiePending)
	{
		die_set_here = true;
		ProcDiePending = true;
		InterruptPending = true;
	}
	CommitTransactionCommand();
	committing = false;
	/*
	 * Stopped while the commit waited for a synchronous standby: the
	 * commit is local only, which LastCommitDurable() sees from the flush
	 * position; the worker leaves by its own handler, as for any SIGTERM.
	 */
	if (die_set_here)
		ProcDiePending = false;
	die_set_here = false;
	if (new_sources)
		WakeSyncWorker();		/* to fetch them */
}

/*
 * BecomeRole - run what follows as role, restricted: for evaluating what a
 * publisher or subscriber defined.  RestoreRole goes back; an ERROR in
 * between is undone by the (sub)transaction's abort, which restores the
 * user it started with, so callers use PG_FINALLY only where they catch.
 */
void
BecomeRole(Oid role, RoleSwitch *save)
{
	GetUserIdAndSecContext(&save->userid, &save->sec_context);
	SetUserIdAndSecContext(role, save->sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

void
RestoreRole(const RoleSwitch *save)
{
	SetUserIdAndSecContext(save->userid, save->sec_context);
}
