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

#include "commands/trigger.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/rel.h"

#include <jansson.h>
#include <openssl/err.h>

PG_MODULE_MAGIC;

char	   *interop_key_file = NULL;

/* InteropRelcacheCallback - drop caches built from a table that changed */
static void
InteropRelcacheCallback(Datum arg, Oid relid)
{
	if (TrustRelationsChanged(relid))
		InvalidateTrustCache();
	if (NodeRelationChanged(relid))
		InvalidateNodeCache();
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

/* _PG_init - define GUCs and hook the caches to invalidation */
void
_PG_init(void)
{
	DefineCustomStringVariable("interop.key_file",
							   "Path of the node's private key file.",
							   "Relative paths are relative to the data directory.",
							   &interop_key_file,
							   "interop/node.key",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	MarkGUCPrefixReserved("interop");

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
