/*-------------------------------------------------------------------------
 *
 * interop.c
 *	  Module entry point: GUCs, library set-up and the cache invalidation
 *	  shared by the per-backend caches of keys.c and x509.c.
 *
 * Caches: each backend keeps the node identity (keys.c) and the trust store
 * with its validated chains (x509.c).  The tables they are read from carry a
 * statement trigger, interop_invalidate_cache(), that queues a relcache
 * invalidation for the changed table.  PostgreSQL delivers it to every
 * backend when the change commits, and InteropRelcacheCallback() drops the
 * matching cache.  A rolled-back change sends nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include <ctype.h>
#include <limits.h>

#include "access/xact.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "lib/stringinfo.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include <jansson.h>
#include <openssl/err.h>

PG_MODULE_MAGIC;

char	   *interop_key_file = NULL;
char	   *interop_database = NULL;
char	   *interop_listen_addresses = NULL;
int			interop_port = 8443;
int			interop_gateway_workers = 2;
bool		interop_tls = true;
char	   *interop_tls_cert_file = NULL;
char	   *interop_tls_key_file = NULL;
bool		interop_require_client_cert = true;
int			interop_request_timeout = 30000;
int			interop_max_clock_skew = 300;
int			interop_max_request_size = 1024 * 1024;
int			interop_max_response_size = 64 * 1024 * 1024;
bool		interop_log_bodies = true;
int			interop_gateway_max_connections = 256;

/* CheckListenAddresses - "*" or a comma-separated list of host names or addresses */
static bool
CheckListenAddresses(char **newval, void **extra, GucSource source)
{
	const char *p = *newval;

	if (p == NULL || *p == '\0')
		return true;			/* empty: the gateway listens nowhere */
	for (; *p; p++)
	{
		if (!(isalnum((unsigned char) *p) || strchr(".-:,* []", *p) != NULL))
		{
			GUC_check_errdetail("Character \"%c\" cannot appear in a host name or address list.", *p);
			GUC_check_errhint("Use \"*\", or host names and IP addresses separated by commas.");
			return false;
		}
	}
	return true;
}

/* bumped whenever the trust store or the node identity is dropped */
uint64		interop_identity_generation = 0;

/* InteropRelcacheCallback - drop caches built from a table that changed */
static void
InteropRelcacheCallback(Datum arg, Oid relid)
{
	if (TrustRelationsChanged(relid))
	{
		InvalidateTrustCache();
		interop_identity_generation++;
	}
	if (NodeRelationChanged(relid))
	{
		InvalidateNodeCache();
		interop_identity_generation++;
	}
}

/*
 * Prepared statements of the request path, kept per process.  Parsing and
 * planning the same few statements on every request cost more than running
 * them; the plan cache revalidates a kept plan when a table it uses changes.
 */
#define PLAN_CACHE_SLOTS 64

typedef struct CachedPlanSlot
{
	uint32		hash;
	char	   *key;			/* SQL text and argument types, TopMemoryContext */
	SPIPlanPtr	plan;
} CachedPlanSlot;

static CachedPlanSlot plan_cache[PLAN_CACHE_SLOTS];
static int	plan_cache_next = 0;

/*
 * ExecuteCached - SPI_execute_with_args() with the plan prepared once per
 * process for this SQL text and these argument types.  The caller is
 * connected to SPI.
 */
int
ExecuteCached(const char *sql, int nargs, Oid *argtypes, Datum *values, const char *nulls,
			  bool read_only, long count)
{
	StringInfoData key;
	uint32		hash;
	CachedPlanSlot *slot = NULL;

	initStringInfo(&key);
	appendStringInfoString(&key, sql);
	for (int i = 0; i < nargs; i++)
		appendStringInfo(&key, " %u", argtypes[i]);
	hash = hash_bytes((const unsigned char *) key.data, key.len);
	for (int i = 0; i < PLAN_CACHE_SLOTS; i++)
		if (plan_cache[i].key != NULL && plan_cache[i].hash == hash &&
			strcmp(plan_cache[i].key, key.data) == 0)
		{
			slot = &plan_cache[i];
			break;
		}
	if (slot == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		slot = &plan_cache[plan_cache_next];
		plan_cache_next = (plan_cache_next + 1) % PLAN_CACHE_SLOTS;
		if (slot->key != NULL)
		{
			SPI_freeplan(slot->plan);
			pfree(slot->key);
		}
		slot->key = MemoryContextStrdup(TopMemoryContext, key.data);
		slot->hash = hash;
		slot->plan = plan;
	}
	pfree(key.data);
	return SPI_execute_plan(slot->plan, values, nulls, read_only, count);
}

/* JanssonAlloc - jansson allocates in the current memory context */
static void *
JanssonAlloc(size_t size)
{
	return palloc(size);
}

/* JanssonFree - pfree, tolerating NULL as free() does */
static void
JanssonFree(void *ptr)
{
	if (ptr != NULL)
		pfree(ptr);
}

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

/*
 * BeginWorkerTransaction - in a background worker: a transaction with a
 * snapshot, connected to SPI; EndWorkerTransaction commits it
 */
void
BeginWorkerTransaction(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
EndWorkerTransaction(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* InteropShmemRequest - reserve the log writer's queue */
static void
InteropShmemRequest(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(LogQueueShmemSize());
	RequestAddinShmemSpace(InteropStatsShmemSize());
}

/* InteropShmemStartup - create or attach the log writer's queue */
static void
InteropShmemStartup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LogQueueShmemInit();
	InteropStatsShmemInit();
}

/* _PG_init - define GUCs and hook the caches to invalidation */
void
_PG_init(void)
{
	/*
	 * Settings of the workers are fixed at server start when the library is
	 * preloaded.  Loaded later (no workers), PostgreSQL refuses to create
	 * PGC_POSTMASTER settings, so they are defined reloadable, for SHOW.
	 */
	GucContext	startup = process_shared_preload_libraries_in_progress ? PGC_POSTMASTER : PGC_SIGHUP;

	DefineCustomStringVariable("interop.key_file",
							   "Path of the node's private key file.",
							   "Relative paths are relative to the data directory.",
							   &interop_key_file,
							   "interop/node.key",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("interop.database",
							   "Database in which the workers run (where CREATE EXTENSION interop was run).",
							   NULL,
							   &interop_database,
							   "postgres",
							   startup,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("interop.listen_addresses",
							   "Addresses the HTTPS gateway listens on.",
							   "A comma-separated list of host names or IP addresses; \"*\" for all; empty for none.",
							   &interop_listen_addresses,
							   "127.0.0.1",
							   startup,
							   GUC_LIST_INPUT,
							   CheckListenAddresses, NULL, NULL);

	DefineCustomIntVariable("interop.port",
							"TCP port of the HTTPS gateway.",
							NULL,
							&interop_port,
							8443, 1, 65535,
							startup,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("interop.gateway_workers",
							"Number of gateway worker processes (0 disables the gateway).",
							"Each has its own listening socket on the same port (SO_REUSEPORT).",
							&interop_gateway_workers,
							2, 0, 64,
							startup,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("interop.gateway_max_connections",
							"Open client connections per gateway worker beyond which requests get 429.",
							"A connection that arrives beyond the limit is answered 429 overloaded and closed; connections already open are served.",
							&interop_gateway_max_connections,
							256, 1, 100000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("interop.tls",
							 "Whether the gateway speaks TLS.",
							 "Turn it off only behind a TLS-terminating proxy: without TLS the gateway cannot check client certificates.",
							 &interop_tls,
							 true,
							 startup,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("interop.tls_cert_file",
							   "PEM certificate chain of the gateway (leaf first).",
							   "Empty: the node certificate chain installed with interop.install_certificate().",
							   &interop_tls_cert_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("interop.tls_key_file",
							   "PEM private key of the gateway certificate.",
							   "Empty: the node key (interop.key_file).",
							   &interop_tls_key_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomBoolVariable("interop.require_client_cert",
							 "Whether the gateway requires a client certificate that chains to a trust anchor.",
							 "With it, the certificate must name the member id that signed the request.",
							 &interop_require_client_cert,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("interop.request_timeout",
							"Longest time an exchange may take.",
							"The consumer waits this long for an answer; the provider cancels a service query that runs longer.",
							&interop_request_timeout,
							30000, 100, 3600 * 1000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("interop.max_clock_skew",
							"Largest clock difference accepted between nodes.",
							"A message whose iat is further in the future, or whose exp is further in the past, is refused.",
							&interop_max_clock_skew,
							300, 0, 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("interop.max_request_size",
							"Largest request body the gateway accepts.",
							NULL,
							&interop_max_request_size,
							1024 * 1024, 1024, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("interop.max_response_size",
							"Largest response body a node sends or accepts.",
							NULL,
							&interop_max_response_size,
							64 * 1024 * 1024, 1024, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("interop.log_bodies",
							 "Whether the message log keeps the messages themselves.",
							 "Off: only their hashes and signatures are kept (detached JWS), so the log holds no answer data.",
							 &interop_log_bodies,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("interop.max_attempts",
							"Attempts at delivering an asynchronous query before it fails.",
							"Retries follow transport failures, 429 and 5xx, after 0.5 s, doubling up to 60 s.",
							&interop_max_attempts,
							20, 1, 1000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("interop.sync_interval",
							"How often the sync worker refreshes each peer's catalog.",
							"An unchanged catalog costs a 304; a peer that cannot be reached is tried again after 5 s, doubling up to an hour.",
							&interop_sync_interval,
							300000, 1000, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("interop.seal_interval",
							"Time between two seals of the logs by the sync worker.",
							"0 turns periodic sealing off; interop.seal_log() still seals on demand.",
							&interop_seal_interval,
							60000, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("interop.change_retention",
							"How long the change log of tables published with track_changes is kept.",
							"The sync worker prunes older entries every interop.sync_interval; a subscriber "
							"whose cursor is older is told 410 cursor_expired and copies again.  0 keeps them.",
							&interop_change_retention,
							7 * 24 * 60, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MIN,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("interop");

	if (process_shared_preload_libraries_in_progress)
	{
		prev_shmem_request_hook = shmem_request_hook;
		shmem_request_hook = InteropShmemRequest;
		prev_shmem_startup_hook = shmem_startup_hook;
		shmem_startup_hook = InteropShmemStartup;
		RegisterLogWriter();
		RegisterSyncWorker();
		RegisterGatewayWorkers();
	}

	json_set_alloc_funcs(JanssonAlloc, JanssonFree);
	CacheRegisterRelcacheCallback(InteropRelcacheCallback, (Datum) 0);
}

PG_FUNCTION_INFO_V1(interop_invalidate_cache);
/*
 * interop_invalidate_cache - statement trigger: tell every backend, at
 * commit, that this configuration table changed.
 */
Datum
interop_invalidate_cache(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("interop_invalidate_cache() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}

PG_FUNCTION_INFO_V1(interop_calling_role);
/*
 * interop_calling_role - the role in effect in the session (after SET ROLE).
 * Inside a SECURITY DEFINER function current_user is the definer; the admin
 * history needs the role that made the change.
 */
Datum
interop_calling_role(PG_FUNCTION_ARGS)
{
	Name		result = palloc0(NAMEDATALEN);

	strlcpy(NameStr(*result), GetUserNameFromId(GetOuterUserId(), false), NAMEDATALEN);
	PG_RETURN_NAME(result);
}
