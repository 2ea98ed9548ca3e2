/*-------------------------------------------------------------------------
 *
 * async.c
 *	  Asynchronous queries: delivered by the sync worker's transfer engine
 *	  (src/transfer.c), with retries.
 *
 * interop.query_async() (src/async.sql) inserts a pending row and, at
 * commit, sets the sync worker's latch.  Each round, the engine asks this
 * kind for due requests (StartAsync): a request is signed at its first
 * attempt with the longest lifetime the protocol allows (an hour) and
 * stored, and that is committed before anything is sent; every retry sends
 * the stored bytes.  A finished attempt is verified and stored (JudgeAsync):
 * done, failed, or pending again with a backoff, with the message_log
 * record of the attempt and a NOTIFY interop_async when the request ends.
 *
 * So a crash anywhere loses nothing (the row stays pending and is sent
 * again) and runs nothing twice: the provider answers a repeated request
 * (same jti, same bytes) from its log (docs/protocol.md).  Transport
 * failures, 429 and 5xx are retried with exponential backoff (0.5 s
 * doubling, at most 60 s) until interop.max_attempts; a signed refusal
 * (4xx) or an answer that does not verify ends the request as failed.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#define ASYNC_LIFETIME 3600		/* seconds: the protocol's longest */

int			interop_max_attempts = 20;

/* what an asynchronous query's transfer carries */
typedef struct AsyncQuery
{
	TransferRequest req;
	int64		id;
	int			attempts;		/* before this one */
} AsyncQuery;

/* the outcome of an attempt */
typedef struct Outcome
{
	const char *state;			/* done, failed, or pending (retry) */
	long		status;
	const char *error_code;
	char	   *message;
	char	   *response;		/* the answer JWS, when there is one */
	char	   *subject;
	int			row_count;
} Outcome;

static bool wake_at_commit = false;
static bool callback_registered = false;

/* ---- the enqueuing backend ---- */

static void
WakeAtCommit(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && wake_at_commit)
		WakeSyncWorker();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
		wake_at_commit = false;
}

PG_FUNCTION_INFO_V1(interop_wake_sync_worker);
/* interop_wake_sync_worker - wake the sync worker when this transaction commits */
Datum
interop_wake_sync_worker(PG_FUNCTION_ARGS)
{
	if (!callback_registered)
	{
		RegisterXactCallback(WakeAtCommit, NULL);
		callback_registered = true;
	}
	wake_at_commit = true;
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(interop_result_rows);
/*
 * interop_result_rows - the rows of a stored answer (verified when it
 * arrived), one jsonb object each
 */
Datum
interop_result_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *jws = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *dot1 = strchr(jws, '.');
	char	   *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	size_t		len;
	char	   *raw;
	Jsonb	   *payload;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	raw = dot2 ? (char *) Base64UrlDecode(dot1 + 1, dot2 - dot1 - 1, &len) : NULL;
	if (raw == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the stored answer is not a JWS")));
	payload = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
												 CStringGetDatum(pg_any_to_server(raw, len, PG_UTF8))));
	AnswerRowsToTuplestore(payload, rsinfo->setResult, rsinfo->setDesc);
	return (Datum) 0;
}

/* ---- the sync worker ---- */

/* Retryable - 429, 5xx and no answer at all are worth another attempt */
static bool
Retryable(long status)
{
	return status == 0 || status == 429 || status >= 500;
}

/* Judge - verify the answer of a finished attempt (may raise an ERROR) */
static void
Judge(Transfer *t, Outcome *o)
{
	AsyncQuery *a = t->data;
	Jsonb	   *payload;
	char	   *code;
	char	   *message;
	JsonbValue *v;

	memset(o, 0, sizeof(*o));
	o->row_count = -1;
	if (t->rc != CURLE_OK)
	{
		PeerFailure f = TransferFailure(t);

		o->state = "pending";
		o->error_code = unpack_sql_state(f.sqlstate);
		o->message = PeerFailureText(&f);
		return;
	}
	o->status = TransferStatus(t);
	if (!TransferSigned(t))
	{
		o->state = Retryable(o->status) ? "pending" : "failed";
		o->error_code = "IX011";
		o->message = psprintf("peer %s answered HTTP %ld without a signed body", t->member, o->status);
		return;
	}
	o->response = TransferBody(t);
	payload = CheckResponse(o->response, t->got.len, t->member, a->req.jti, a->req.req_hash, &code, &message);
	if (code != NULL)
	{
		o->state = Retryable(o->status) ? "pending" : "failed";
		o->error_code = psprintf("IX%03ld", o->status >= 400 && o->status <= 599 ? o->status : 500);
		o->message = psprintf("peer %s refused the request for service \"%s\": %s: %s",
							  t->member, a->req.service, code, message);
		return;
	}
	if (o->status != 200)
	{
		o->state = "failed";
		o->error_code = "IX011";
		o->message = psprintf("peer %s answered HTTP %ld without an error claim", t->member, o->status);
		return;
	}
	v = ResponseClaim(payload, "rows");
	o->row_count = (v && v->type == jbvBinary) ? JsonContainerSize(v->val.binary.data) : 0;
	v = ResponseClaim(payload, "sub");
	if (v && v->type == jbvString)
		o->subject = pnstrdup(v->val.string.val, v->val.string.len);
	o->state = "done";
}

/* Record - store the outcome of an attempt and log it; in a transaction */
static void
Record(Transfer *t, Outcome *o)
{
	AsyncQuery *a = t->data;
	Datum		values[8];
	char		nulls[9] = "        ";
	Oid			types[8] = {INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, INT4OID, INT4OID};
	char	   *state;

	values[0] = Int64GetDatum(a->id);
	values[1] = CStringGetTextDatum(o->state);
	values[2] = Int32GetDatum((int32) o->status);
	values[3] = o->error_code ? CStringGetTextDatum(o->error_code) : (Datum) 0;
	nulls[3] = o->error_code ? ' ' : 'n';
	values[4] = o->message ? CStringGetTextDatum(o->message) : (Datum) 0;
	nulls[4] = o->message ? ' ' : 'n';
	values[5] = (o->response && strcmp(o->state, "done") == 0) ? CStringGetTextDatum(o->response) : (Datum) 0;
	nulls[5] = (o->response && strcmp(o->state, "done") == 0) ? ' ' : 'n';
	values[6] = Int32GetDatum(o->row_count);
	nulls[6] = o->row_count >= 0 ? ' ' : 'n';
	values[7] = Int32GetDatum(interop_max_attempts);
	if (ExecuteCached("UPDATE interop.async_request SET attempts = attempts + 1, http_status = $3, "
					  "error_code = $4, last_error = $5, response = $6, row_count = $7, "
					  "state = CASE WHEN $2 = 'pending' AND attempts + 1 >= $8 THEN 'failed' ELSE $2 END, "
					  "next_attempt = pg_catalog.clock_timestamp() + "
					  "  least(60, 0.5 * 2 ^ least(attempts, 10)) * interval '1 second', "
					  "completed_at = CASE WHEN $2 = 'pending' AND attempts + 1 < $8 THEN NULL "
					  "  ELSE pg_catalog.clock_timestamp() END "
					  "WHERE id = $1 RETURNING state",
					  8, types, values, nulls, false, 1) != SPI_OK_UPDATE_RETURNING || SPI_processed != 1)
		elog(ERROR, "could not update asynchronous request " INT64_FORMAT, a->id);
	state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

	TransferLog(t, &a->req, o->subject, o->response, o->status, o->error_code, o->message, o->row_count);

	/* what pg_notify() does, without a statement */
	if (strcmp(state, "pending") != 0)
		Async_Notify("interop_async", psprintf(INT64_FORMAT, a->id));
}

/* JudgeAsync - a finished attempt: verify and record */
static void
JudgeAsync(Transfer *t)
{
	Outcome		o;

	Judge(t, &o);
	Record(t, &o);
}

/* FailAsync - the answer did not verify (Judge raised edata): record it */
static void
FailAsync(Transfer *t, ErrorData *edata)
{
	Outcome		o;

	/*
	 * That does not get better by asking again, unless what was missing was
	 * the revocation status of the provider's certificate, which the sync
	 * worker is fetching.
	 */
	memset(&o, 0, sizeof(o));
	o.state = edata->sqlerrcode == ERRCODE_INTEROP_REVOCATION_UNKNOWN ? "pending" : "failed";
	o.status = TransferStatus(t);
	o.error_code = unpack_sql_state(edata->sqlerrcode);
	o.message = edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message;
	o.row_count = -1;
	Record(t, &o);
}

/*
 * StartAsync - claim free slots for the due requests.  Requests without a
 * stored request are signed and stored first: the engine commits before it
 * sends.  A request whose peer was removed fails at once.
 *
 * The first free-slots many due requests are read in order from the index
 * async_request_due (next_attempt, id), and only they are joined with their
 * peer: with a long queue, sorting every pending request each round was
 * most of the sync worker's time.  statement_timestamp(), not
 * clock_timestamp(), so that the bound can be an index condition.  The
 * outer ORDER BY sorts the few rows the LIMIT kept, which enable_sort = off
 * cannot prevent and need not.
 */
static void
StartAsync(void)
{
	uint64		nrows;
	SPITupleTable *tt;
	int			nest = NewGUCNestLevel();

	/*
	 * Read them in index order whatever the statistics say: right after a
	 * large batch is queued they still count the queue as short, and the
	 * planner would sort every pending request for each free slot.
	 */
	(void) set_config_option("enable_sort", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_bitmapscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	nrows = DueOfKind(&async_transfers,
					  "SELECT a.id, a.provider::text, a.service, a.purpose, a.params::text, a.jti::text, "
					  "a.request, a.attempts, p.base_url, p.more_urls "
					  "FROM (SELECT * FROM interop.async_request d "
					  "      WHERE d.state = 'pending' AND d.next_attempt <= pg_catalog.statement_timestamp() "
					  "      AND d.id::text <> ALL ($1) ORDER BY d.next_attempt, d.id LIMIT $2) a "
					  "LEFT JOIN interop.peer p ON p.member_id = a.provider ORDER BY a.next_attempt, a.id");
	AtEOXact_GUC(true, nest);
	tt = SPI_tuptable;
	if (nrows > 0)
		PeerIdentityLoad();

	for (uint64 r = 0; r < nrows; r++)
	{
		HeapTuple	tup = tt->vals[r];
		TupleDesc	desc = tt->tupdesc;
		bool		isnull;
		char	   *provider = SPI_getvalue(tup, desc, 2);
		char	   *url = PeerFirstUrl(provider, tup, desc, 9, 10, "/v1/query");
		MemoryContext old;
		Transfer   *t = ClaimTransfer(&async_transfers, SPI_getvalue(tup, desc, 1), provider,
									  url ? url : "", &old);
		AsyncQuery *a;

		if (t == NULL)
			break;
		a = palloc0(sizeof(AsyncQuery));
		t->data = a;
		a->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		a->req.service = SPI_getvalue(tup, desc, 3);
		a->req.purpose = SPI_getvalue(tup, desc, 4);
		a->req.jti = SPI_getvalue(tup, desc, 6);
		t->request = SPI_getvalue(tup, desc, 7);
		a->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
		if (url == NULL)
		{
			/* the peer was removed since: nothing to send it to */
			Outcome		o;

			memset(&o, 0, sizeof(o));
			o.state = "failed";
			o.error_code = "42704";
			o.message = psprintf("peer \"%s\" is not known", t->member);
			o.row_count = -1;
			t->started = GetCurrentTimestamp();
			MemoryContextSwitchTo(old);
			Record(t, &o);
			MemoryContextDelete(t->cxt);
			t->cxt = NULL;
			continue;
		}
		if (t->request == NULL)
		{
			char	   *claims = BuildRequest(t->member, a->req.service, SPI_getvalue(tup, desc, 5),
											  a->req.purpose, a->req.jti, ASYNC_LIFETIME, NULL);
			Datum		args[2];
			Oid			argtypes[2] = {INT8OID, TEXTOID};

			t->request = JwsSignJson(claims, strlen(claims), JWS_TYP_REQUEST);
			args[0] = Int64GetDatum(a->id);
			args[1] = CStringGetTextDatum(t->request);
			MemoryContextSwitchTo(old);
			if (ExecuteCached("UPDATE interop.async_request SET request = $2 WHERE id = $1",
							  2, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not store the request of " INT64_FORMAT, a->id);
			MemoryContextSwitchTo(t->cxt);
		}
		a->req.req_hash = Sha256Base64Url(t->request, strlen(t->request));
		MemoryContextSwitchTo(old);
	}
}

const TransferKind async_transfers = {
	.name = "asynchronous query",
	.start = StartAsync,
	.judge = JudgeAsync,
	.fail = FailAsync,
	.next_due = "(SELECT min(next_attempt) FROM interop.async_request WHERE state = 'pending')"
};
