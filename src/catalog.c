/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  Both sides of GET /v1/catalog: the provider's list of the services it
 *	  grants a consumer, interop.catalog() in a consumer's backend, and the
 *	  sync worker's refresh of every peer's catalog into interop.peer_catalog
 *	  (a kind of src/transfer.c).
 *
 * The catalog is signed (typ "interop-catalog") and addressed to the TLS
 * client's member id.  Its ETag names the list of services, not the signed
 * body (which changes with iat): the sync worker sends it back as
 * If-None-Match and an unchanged catalog costs a 304.  A consumer checks a
 * catalog in src/protocol.c (CheckCatalog) before it stores or uses it: a
 * peer's catalog is hostile input that import_service() turns into SQL
 * names.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"

/* ---- the provider ---- */

/*
 * CatalogJson - the services granted to consumer, as the JSON array that
 * GET /v1/catalog signs: name, description, columns with their types,
 * filters, subject column, consent rule, row limit, allowed purposes.
 * The caller is connected to SPI.
 */
char *
CatalogJson(const char *consumer)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(consumer)};
	int			ret;

	ret = SPI_execute_with_args("SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object("
								"'name', s.name, 'description', s.description, "
								"'columns', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object("
								"    'name', a.attname, 'type', pg_catalog.format_type(a.atttypid, NULL)) ORDER BY a.attnum) "
								"  FROM pg_catalog.pg_attribute a "
								"  WHERE a.attrelid = s.source AND a.attnum > 0 AND NOT a.attisdropped), "
								"'filters', s.filter_columns, 'subject_column', s.subject_column, "
								"'requires_consent', s.requires_consent, 'max_rows', s.max_rows, "
								"'purposes', g.purposes) ORDER BY s.name), '[]')::text "
								"FROM interop.service s JOIN interop.access_grant g ON g.service = s.name "
								"WHERE g.consumer = $1::interop.member_id",
								1, argtypes, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the catalog: %s", SPI_result_code_string(ret));
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * NoneMatch - does an If-None-Match header name etag?  The header is "*"
 * or a comma-separated list of entity tags, each maybe weak ("W/"); the
 * comparison is the weak one of RFC 9110 §13.1.2 (the opaque tags alone).
 */
static bool
NoneMatch(const char *header, const char *etag)
{
	const char *p = header;
	size_t		elen = strlen(etag);

	while (*p)
	{
		const char *end;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '*')
			return true;
		if (strncmp(p, "W/", 2) == 0)
			p += 2;
		if (*p != '"')
			return false;		/* not an entity tag: no match */
		end = strchr(p + 1, '"');
		if (end == NULL)
			return false;
		if ((size_t) (end + 1 - p) == elen && strncmp(p, etag, elen) == 0)
			return true;
		p = end + 1;
	}
	return false;
}

/*
 * CatalogAnswer - the signed catalog for consumer, or NULL when
 * if_none_match names its ETag (then a 304); *etag is set either way.
 * Connected to SPI.
 */
char *
CatalogAnswer(const char *consumer, const char *if_none_match, char **etag)
{
	StringInfoData buf;
	char	   *services = CatalogJson(consumer);

	*etag = psprintf("\"%s\"", Sha256Base64Url(services, strlen(services)));
	if (if_none_match != NULL && NoneMatch(if_none_match, *etag))
		return NULL;
	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"iss\":");
	escape_json(&buf, GetNodeState()->member_id);
	appendStringInfoString(&buf, ",\"aud\":");
	escape_json(&buf, consumer);
	appendStringInfo(&buf, ",\"iat\":%ld,\"services\":%s}", (long) time(NULL), services);
	return JwsSignJson(buf.data, buf.len, JWS_TYP_CATALOG);
}

/* ---- a consumer's backend ---- */

PG_FUNCTION_INFO_V1(interop_catalog);
/*
 * interop_catalog - the services a peer grants this node, from its signed
 * GET /v1/catalog, verified
 */
Datum
interop_catalog(PG_FUNCTION_ARGS)
{
	char	   *provider = text_to_cstring(PG_GETARG_TEXT_PP(0));
	List	   *urls;
	PeerAnswer	res;
	int			ret;
	MemoryContext cxt = CurrentMemoryContext;

	RefuseOnStandby("interop.catalog()");

	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
	urls = PeerBaseUrls(provider, cxt);
	SPI_finish();

	PeerExchange(provider, urls, "/v1/catalog", NULL, &res);
	PeerAnswerSigned(provider, &res);
	if (res.status != 200)
	{
		char	   *code;
		char	   *message;

		/* a refusal is signed like an answer, and bound to nothing we sent */
		(void) CheckResponse(res.body, res.len, provider, NULL, NULL, &code, &message);
		PeerRefusal(provider, "(catalog)", res.status, code ? code : "error", message ? message : "(no message)");
	}
	PG_RETURN_JSONB_P(CheckCatalog(res.body, res.len, provider));
}

/* ---- the sync worker: interop.peer_catalog ---- */

/*
 * RecordCatalog - store a catalog refresh: new services (200, verified),
 * unchanged (304), or a failure, after which the next check backs off
 * (5 s, doubling, at most an hour).
 */
static void
RecordCatalog(Transfer *t, long status, const char *services, const char *error)
{
	Datum		values[5];
	char		nulls[6] = "     ";
	Oid			types[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID};
	int			ret;

	values[0] = CStringGetTextDatum(t->member);
	values[1] = services ? CStringGetTextDatum(services) : (Datum) 0;
	nulls[1] = services ? ' ' : 'n';
	values[2] = t->etag_got[0] ? CStringGetTextDatum(t->etag_got) : (Datum) 0;
	nulls[2] = t->etag_got[0] ? ' ' : 'n';
	values[3] = error ? CStringGetTextDatum(error) : (Datum) 0;
	nulls[3] = error ? ' ' : 'n';
	values[4] = Int32GetDatum(interop_sync_interval);
	if (error != NULL)
		ret = SPI_execute_with_args("INSERT INTO interop.peer_catalog AS c (peer, checked_at, failures, last_error, next_check) "
									"VALUES ($1::interop.member_id, pg_catalog.clock_timestamp(), 1, $4, "
									"        pg_catalog.clock_timestamp() + interval '5 s') "
									"ON CONFLICT (peer) DO UPDATE SET checked_at = excluded.checked_at, "
									"  failures = c.failures + 1, last_error = excluded.last_error, "
									"  next_check = pg_catalog.clock_timestamp() + "
									"    least(3600, 5 * 2 ^ least(c.failures + 1, 12)) * interval '1 s'",
									5, types, values, nulls, false, 0);
	else if (status == 304)
		ret = SPI_execute_with_args("UPDATE interop.peer_catalog SET checked_at = pg_catalog.clock_timestamp(), "
									"failures = 0, last_error = NULL, "
									"next_check = pg_catalog.clock_timestamp() + $5 * interval '1 ms' "
									"WHERE peer = $1::interop.member_id AND $2 IS NULL AND $3 IS NOT NULL AND $4 IS NULL",
									5, types, values, nulls, false, 0);
	else
		ret = SPI_execute_with_args("INSERT INTO interop.peer_catalog AS c (peer, services, etag, fetched_at, checked_at, "
									"  failures, last_error, next_check) "
									"VALUES ($1::interop.member_id, $2::jsonb, $3, pg_catalog.clock_timestamp(), "
									"  pg_catalog.clock_timestamp(), 0, $4, pg_catalog.clock_timestamp() + $5 * interval '1 ms') "
									"ON CONFLICT (peer) DO UPDATE SET services = excluded.services, etag = excluded.etag, "
									"  fetched_at = excluded.fetched_at, checked_at = excluded.checked_at, failures = 0, "
									"  last_error = NULL, next_check = excluded.next_check",
									5, types, values, nulls, false, 0);
	if (ret < 0)
		elog(ERROR, "could not store the catalog of %s: %s", t->member, SPI_result_code_string(ret));
}

/* JudgeCatalog - verify a catalog answer and store it (may raise an ERROR) */
static void
JudgeCatalog(Transfer *t)
{
	long		status;
	Jsonb	   *services;

	if (t->rc != CURLE_OK)
	{
		PeerFailure f = TransferFailure(t);

		RecordCatalog(t, 0, NULL, PeerFailureText(&f));
		return;
	}
	status = TransferStatus(t);
	if (status == 304 && t->etag_sent)
	{
		RecordCatalog(t, 304, NULL, NULL);
		return;
	}
	if (status != 200 || !TransferSigned(t))
	{
		RecordCatalog(t, status, NULL, psprintf("peer %s answered the catalog request with HTTP %ld", t->member, status));
		return;
	}
	services = CheckCatalog(t->got.data, t->got.len, t->member);
	RecordCatalog(t, 200, JsonbToCString(NULL, &services->root, VARSIZE(services)), NULL);
}

/* FailCatalog - the catalog did not verify: a failure, with a backoff */
static void
FailCatalog(Transfer *t, ErrorData *edata)
{
	RecordCatalog(t, 0, NULL, edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message);
}

/*
 * StartCatalogs - claim free slots for the peers whose catalog is due: never
 * fetched, or next_check passed
 */
static void
StartCatalogs(void)
{
	SPITupleTable *tt;
	uint64		nrows;

	/* no identity to call peers with yet: nothing to do */
	if (!HasIdentity())
		return;
	nrows = DueOfKind(&catalog_transfers,
					  "SELECT p.member_id::text, p.base_url, c.etag, p.more_urls FROM interop.peer p "
					  "LEFT JOIN interop.peer_catalog c ON c.peer = p.member_id "
					  "WHERE coalesce(c.next_check, '-infinity') <= pg_catalog.clock_timestamp() "
					  "AND p.member_id::text <> ALL ($1) ORDER BY c.next_check NULLS FIRST LIMIT $2");
	tt = SPI_tuptable;
	if (nrows > 0)
		PeerIdentityLoad();
	for (uint64 r = 0; r < nrows; r++)
	{
		MemoryContext old;
		char	   *etag = SPI_getvalue(tt->vals[r], tt->tupdesc, 3);
		char	   *member = SPI_getvalue(tt->vals[r], tt->tupdesc, 1);
		Transfer   *t = ClaimTransfer(&catalog_transfers, member, member,
									  PeerFirstUrl(member, tt->vals[r], tt->tupdesc, 2, 4, "/v1/catalog"), &old);

		if (t == NULL)
			break;
		t->etag_sent = etag ? pstrdup(etag) : NULL;
		MemoryContextSwitchTo(old);
	}
}

const TransferKind catalog_transfers = {
	.name = "catalog",
	.start = StartCatalogs,
	.judge = JudgeCatalog,
	.fail = FailCatalog,
	.next_due = "(SELECT min(coalesce(c.next_check, '-infinity')) FROM interop.peer p "
	"LEFT JOIN interop.peer_catalog c ON c.peer = p.member_id "
	"WHERE EXISTS (SELECT 1 FROM interop.node WHERE certificate_chain IS NOT NULL))"
};
