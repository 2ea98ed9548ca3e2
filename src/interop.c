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
#include <sys/stat.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "lib/stringinfo.h"
#include "utils/rel.h"
#include "tcop/pquery.h"
#include "utils/portal.h"
#include "utils/snapmgr.h"

#include <jansson.h>
#include <openssl/err.h>

PG_MODULE_MAGIC;

char	   *interop_key_file = NULL;
char	   *interop_database = NULL;
char	   *interop_listen_addresses = NULL;
int			interop_port = 8443;
char	   *interop_monitor_listen_addresses = NULL;
int			interop_monitor_port = 0;
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
bool		interop_accept_untyped_messages = false;
int			interop_gateway_max_connections = 256;
int			interop_min_log_retention = 30 * 24 * 60;	/* minutes */
int			interop_min_certificate_lifetime = 0;	/* seconds */

static const struct config_enum_entry revocation_check_options[] = {
	{"require", REVOCATION_REQUIRE, false},
	{"best_effort", REVOCATION_BEST_EFFORT, false},
	{NULL, 0, false}
};

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

/*
 * Retired cache objects.  An invalidation can arrive in the middle of an
 * operation (at any lock a statement takes), while the operation still
 * holds a pointer into the cache it is dropping: the node identity, the
 * trust store, a cached signer key.  So a dropped cache object is freed at
 * the end of the transaction, when no such pointer is in use; whatever
 * must outlive the transaction (a connection still to be opened) holds a
 * reference of its own (client.c's TLS identity).
 */
typedef struct Retired
{
	void		(*free_fn) (void *);
	void	   *ptr;
	struct Retired *next;
} Retired;

static Retired *retired = NULL;
static bool retire_callback_registered = false;

/* FreeRetired - free what was retired, at the end of a transaction */
static void
FreeRetired(XactEvent event, void *arg)
{
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	while (retired != NULL)
	{
		Retired    *r = retired;

		retired = r->next;
		r->free_fn(r->ptr);
		pfree(r);
	}
}

/*
 * RetireAtTransactionEnd - free ptr with free_fn once the current
 * transaction ends (at once outside a transaction)
 */
void
RetireAtTransactionEnd(void (*free_fn) (void *), void *ptr)
{
	Retired    *r;

	if (ptr == NULL)
		return;
	if (!IsTransactionState())
	{
		free_fn(ptr);
		return;
	}
	if (!retire_callback_registered)
	{
		RegisterXactCallback(FreeRetired, NULL);
		retire_callback_registered = true;
	}
	r = MemoryContextAlloc(TopMemoryContext, sizeof(Retired));
	r->free_fn = free_fn;
	r->ptr = ptr;
	r->next = retired;
	retired = r;
}

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
	if (PeerRelationChanged(relid))
		InvalidatePeerCache();
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
 * ExecuteCachedPlan - SPI_execute_with_args() with the plan prepared once
 * per process for this SQL text, these argument types and these cursor
 * options (CURSOR_OPT_GENERIC_PLAN: one plan for every value, never planned
 * again).  The caller is connected to SPI.
 */
int
ExecuteCachedPlan(const char *sql, int nargs, Oid *argtypes, Datum *values, const char *nulls,
				  bool read_only, long count, int cursor_options)
{
	StringInfoData key;
	uint32		hash;
	CachedPlanSlot *slot = NULL;

	initStringInfo(&key);
	appendStringInfoString(&key, sql);
	for (int i = 0; i < nargs; i++)
		appendStringInfo(&key, " %u", argtypes[i]);
	appendStringInfo(&key, " /%d", cursor_options);
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
		SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, cursor_options);

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

/* ExecuteCached - ExecuteCachedPlan() with the planner's choice of plans */
int
ExecuteCached(const char *sql, int nargs, Oid *argtypes, Datum *values, const char *nulls,
			  bool read_only, long count)
{
	return ExecuteCachedPlan(sql, nargs, argtypes, values, nulls, read_only, count, 0);
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
	RequestAddinShmemSpace(WorkerShmemSize());
}

/* InteropShmemStartup - create or attach the log writer's queue */
static void
InteropShmemStartup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LogQueueShmemInit();
	InteropStatsShmemInit();
	WorkerShmemInit();
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
							   "Path of the node's private key file, or a pkcs11: URI of a key in a token.",
							   "Relative paths are relative to the data directory; with a pkcs11: URI (RFC 7512) the key never leaves the token.",
							   &interop_key_file,
							   "interop/node.key",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("interop.pkcs11_module",
							   "The PKCS#11 library of the token that holds the node key.",
							   "Used when interop.key_file is a pkcs11: URI; empty: the pkcs11 engine's default (p11-kit).",
							   &interop_pkcs11_module,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("interop.pkcs11_pin_file",
							   "A file with the user PIN of the token that holds the node key.",
							   "An absolute path outside the data directory, readable only by the server's OS user.",
							   &interop_pkcs11_pin_file,
							   "",
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

	DefineCustomStringVariable("interop.monitor_listen_addresses",
							   "Addresses the monitoring listener (plain HTTP: readiness and metrics) listens on.",
							   "A comma-separated list of host names or IP addresses; \"*\" for all.",
							   &interop_monitor_listen_addresses,
							   "127.0.0.1",
							   startup,
							   GUC_LIST_INPUT,
							   CheckListenAddresses, NULL, NULL);

	DefineCustomIntVariable("interop.monitor_port",
							"TCP port of the monitoring listener (0: none).",
							"It serves GET /v1/health and GET /metrics over plain HTTP, without a client certificate.",
							&interop_monitor_port,
							0, 0, 65535,
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

	DefineCustomEnumVariable("interop.revocation_check",
							 "What a certificate whose revocation status is unknown here gets.",
							 "Known: its issuer's CRL is current, or a fresh OCSP answer is stored or stapled. "
							 "require: refused (IX012, 503 revocation_unknown) when the certificate names a CRL distribution point "
							 "or an OCSP responder, accepted when it names neither; best_effort: accepted.",
							 &interop_revocation_check,
							 REVOCATION_REQUIRE,
							 revocation_check_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("interop.ocsp_max_age",
							"How long an OCSP answer counts after its thisUpdate.",
							"An answer also stops counting at its nextUpdate. The sync worker asks again when half of "
							"that time is left; an answer that says revoked counts for ever.",
							&interop_ocsp_max_age,
							3600, 1, 86400 * 365,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomStringVariable("interop.tsa_url",
							   "URL of the RFC 3161 time-stamping authority that timestamps the seals (http://).",
							   "Empty: seals are not timestamped. The TSA's certificate must chain to a trust anchor.",
							   &interop_tsa_url,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("interop.max_timestamp_gap",
							"How long a seal may wait for a timestamp before the gateway stops answering.",
							"With interop.tsa_url set, past this the gateway answers queries and pages of changes "
							"with 503 not_timestamped, and interop.verify_log() names seals timestamped later. "
							"0: never.",
							&interop_max_timestamp_gap,
							14400, 0, 86400 * 365,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("interop.accept_untyped_messages",
							 "Whether messages of peers that still run interop 0.1.0 are accepted.",
							 "0.1.0 signs requests, answers and catalogs with typ \"JOSE\", as interop.sign() does. "
							 "On, a payload signed with sign() by a user of a peer could pass for one of its messages: "
							 "turn it on only while a federation updates, and off once every peer runs 0.2.0.",
							 &interop_accept_untyped_messages,
							 false,
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

	DefineCustomIntVariable("interop.min_log_retention",
							"How long interop.prune_log() must keep every record.",
							"A prune_log() cutoff later than now minus this is refused, so a record of a read cannot be "
							"removed right after the read.  Only a superuser can lower it.",
							&interop_min_log_retention,
							30 * 24 * 60, 0, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_MIN,
							NULL, NULL, NULL);

	DefineCustomIntVariable("interop.min_certificate_lifetime",
							"Shortest remaining lifetime a node certificate may be installed with.",
							"interop.install_certificate() refuses a certificate that expires sooner; 0: no minimum.",
							&interop_min_certificate_lifetime,
							0, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("interop.require_synchronous_log",
							 "Answer only what is logged durably on a synchronous standby.",
							 "With it on, the gateway answers 503 and interop.query() refuses while synchronous_standby_names "
							 "is empty or fewer synchronous standbys stream than it asks for, and the workers commit with "
							 "synchronous_commit = on.",
							 &interop_require_synchronous_log,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("interop");

	if (process_shared_preload_libraries_in_progress)
	{
		/* a standby: say once why interop's workers are not running */
		struct stat st;

		if (stat(STANDBY_SIGNAL_FILE, &st) == 0)
			ereport(LOG,
					(errmsg("interop's workers start when this standby is promoted"),
					 errdetail("A hot standby is read-only: the gateway, the log writer and the sync worker run on the primary only."),
					 errhint("Reads work here: interop.verify_log(), interop.subject_access_report(), the catalogs and the views.")));

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

PG_FUNCTION_INFO_V1(interop_restoring);
/*
 * interop_restoring - whether the row being written comes from a restore:
 * the statement is a COPY FROM and the session's role is a superuser, as
 * when pg_restore or psql replays a dump.  The triggers of interop's
 * configuration tables then keep the row as dumped (its owner, its time)
 * and write no history: the dump carries the history already.  Any other
 * writer, and any role that is not a superuser (who could not pick an
 * owner anyway), goes through the triggers' rules.
 */
Datum
interop_restoring(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(ActivePortal != NULL && ActivePortal->commandTag == CMDTAG_COPY &&
				   superuser_arg(GetOuterUserId()));
}
