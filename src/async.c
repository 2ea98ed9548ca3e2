/*-------------------------------------------------------------------------
 *
 * async.c
 *	  Asynchronous queries: delivered by the sync worker, with retries.
 *
 * interop.query_async() (src/async.sql) inserts a pending row and, at
 * commit, sets the sync worker's latch.  Each round of the worker:
 *
 *	1. harvests finished transfers: verifies each answer and, in one
 *	   transaction, stores the outcome (done, failed, or pending again with
 *	   a backoff), writes the message_log record of the attempt and NOTIFYs
 *	   interop_async with the id when the request is finished;
 *	2. starts due requests, up to ASYNC_CONCURRENCY transfers at once on one
 *	   libcurl multi handle.  A request is signed at its first attempt with
 *	   the longest lifetime the protocol allows (an hour) and stored before
 *	   it is sent; every retry sends the stored bytes.
 *
 * So a crash anywhere loses nothing (the row stays pending and is sent
 * again) and runs nothing twice: the provider answers a repeated request
 * (same jti, same bytes) from its log (DESIGN §5).  Transport failures,
 * 429 and 5xx are retried with exponential backoff (0.5 s doubling, at most
 * 60 s) until interop.max_attempts; a signed refusal (4xx) or an answer that
 * does not verify ends the request as failed.
 *
 * TLS is as for interop.query() (src/client.c), except that the member id
 * a connection must present is the transfer's, found from the SSL_CTX.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#define ASYNC_CONCURRENCY 16
#define ASYNC_LIFETIME 3600		/* seconds: the protocol's longest */

int			interop_max_attempts = 20;
int			interop_sync_interval = 300000;

/* one transfer in flight */
typedef struct Transfer
{
	char		kind;			/* 'q': an asynchronous query; 'c': a catalog; 'r': a CRL;
								 * 's': a subscription's pull */
	bool		busy;
	bool		finished;
	CURL	   *easy;
	MemoryContext cxt;
	int64		id;
	int			attempts;		/* before this one */
	char	   *name;			/* what DueOfKind knows it by: peer, URL or subscription id */
	char	   *provider;
	char	   *service;
	char	   *purpose;
	char	   *jti;
	char	   *request;
	char	   *req_hash;
	char	   *url;
	struct curl_slist *headers;
	Body		got;
	char		errbuf[CURL_ERROR_SIZE];
	char		presented[256];
	bool		mismatch;
	CURLcode	rc;
	TimestampTz started;
	char	   *etag_sent;		/* catalog: the ETag we have, sent as If-None-Match */
	char		etag_got[128];	/* catalog: the answer's ETag */
	char	   *cursor;			/* subscription: the cursor sent (NULL: start) */
	Oid			target;			/* subscription: the local table */
	char	   *owner;			/* subscription: the role that applies */
} Transfer;

static Transfer transfers[ASYNC_CONCURRENCY];
static CURLM *amulti = NULL;
static int	ctx_index = -1;
static uint64 handles_generation = 0;
static bool wake_at_commit = false;
static bool callback_registered = false;

static Transfer *ClaimSlot(char kind, const char *name, const char *provider, const char *url, const char *etag);

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
	RowsToTuplestore(payload, rsinfo->setResult, rsinfo->setDesc);
	return (Datum) 0;
}

/* ---- the sync worker's transfers ---- */

/* AsyncVerifyPeer - trust, then the leaf must name the transfer's provider */
static int
AsyncVerifyPeer(int ok, X509_STORE_CTX *ctx)
{
	ok = TrustVerifyCallback(ok, ctx);
	if (ok && X509_STORE_CTX_get_error_depth(ctx) == 0)
	{
		SSL		   *ssl = X509_STORE_CTX_get_ex_data(ctx, SSL_get_ex_data_X509_STORE_CTX_idx());
		Transfer   *t = ssl ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_index) : NULL;
		X509_NAME  *name = X509_get_subject_name(X509_STORE_CTX_get_current_cert(ctx));
		char		cn[256] = "";

		if (t == NULL)
			return 0;
		X509_NAME_get_text_by_NID(name, NID_commonName, cn, sizeof(cn));
		strlcpy(t->presented, cn, sizeof(t->presented));
		if (strcmp(cn, t->provider) != 0)
		{
			t->mismatch = true;
			X509_STORE_CTX_set_error(ctx, X509_V_ERR_APPLICATION_VERIFICATION);
			return 0;
		}
	}
	return ok;
}

/* AsyncSslCtx - libcurl's SSL_CTX callback for a transfer */
static CURLcode
AsyncSslCtx(CURL *curl, void *sslctx, void *parm)
{
	if (!ClientTlsSetup(sslctx, AsyncVerifyPeer) ||
		!SSL_CTX_set_ex_data(sslctx, ctx_index, parm))
		return CURLE_SSL_CERTPROBLEM;
	return CURLE_OK;
}

/* ResetTransfers - drop the handles and their connections (none in flight) */
static void
ResetTransfers(void)
{
	for (int i = 0; i < ASYNC_CONCURRENCY; i++)
	{
		if (transfers[i].easy)
			curl_easy_cleanup(transfers[i].easy);
		transfers[i].easy = NULL;
	}
	if (amulti)
		curl_multi_cleanup(amulti);
	amulti = NULL;
}

/* PrepareTransfers - the multi handle and one easy handle per slot */
static void
PrepareTransfers(void)
{
	if (amulti != NULL && handles_generation != interop_identity_generation)
	{
		bool		idle = true;

		for (int i = 0; i < ASYNC_CONCURRENCY; i++)
			idle &= !transfers[i].busy;
		if (idle)
			ResetTransfers();
	}
	if (amulti != NULL)
		return;
	if (ctx_index < 0)
		ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
		elog(ERROR, "could not initialise libcurl");
	amulti = curl_multi_init();
	if (amulti == NULL)
		elog(ERROR, "could not create a libcurl multi handle");
	for (int i = 0; i < ASYNC_CONCURRENCY; i++)
	{
		transfers[i].easy = curl_easy_init();
		if (transfers[i].easy == NULL)
			elog(ERROR, "could not create a libcurl handle");
		ConfigureEasy(transfers[i].easy, AsyncSslCtx, &transfers[i]);
	}
	handles_generation = interop_identity_generation;
}

/* CatchEtag - libcurl header callback: keep the ETag */
static size_t
CatchEtag(char *buffer, size_t size, size_t nitems, void *userdata)
{
	Transfer   *t = userdata;
	size_t		n = size * nitems;

	if (n > 5 && pg_strncasecmp(buffer, "ETag:", 5) == 0)
	{
		size_t		start = 5;
		size_t		end = n;

		while (start < end && (buffer[start] == ' ' || buffer[start] == '\t'))
			start++;
		while (end > start && (buffer[end - 1] == '\r' || buffer[end - 1] == '\n' || buffer[end - 1] == ' '))
			end--;
		if (end - start < sizeof(t->etag_got))
		{
			memcpy(t->etag_got, buffer + start, end - start);
			t->etag_got[end - start] = '\0';
		}
	}
	return n;
}

/* StartTransfer - send a stored request, or ask for a catalog */
static void
StartTransfer(Transfer *t)
{
	t->got.data = NULL;
	t->got.len = t->got.cap = 0;
	t->got.too_large = false;
	t->errbuf[0] = '\0';
	t->presented[0] = '\0';
	t->mismatch = false;
	t->finished = false;
	t->rc = CURLE_OK;
	t->started = GetCurrentTimestamp();
	t->etag_got[0] = '\0';
	t->headers = curl_slist_append(NULL, "Accept: application/jose");
	t->headers = curl_slist_append(t->headers, "Expect:");
	if (t->kind == 'q' || t->kind == 's')
		t->headers = curl_slist_append(t->headers, "Content-Type: application/jose");
	else if (t->etag_sent)
		t->headers = curl_slist_append(t->headers, psprintf("If-None-Match: %s", t->etag_sent));
	curl_easy_setopt(t->easy, CURLOPT_URL, t->url);
	curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);
	curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, &t->got);
	curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, (long) interop_request_timeout);
	curl_easy_setopt(t->easy, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(interop_request_timeout, 10000));
	curl_easy_setopt(t->easy, CURLOPT_FRESH_CONNECT, ReuseAllowed(t->url, t->provider) ? 0L : 1L);
	curl_easy_setopt(t->easy, CURLOPT_HEADERFUNCTION, CatchEtag);
	curl_easy_setopt(t->easy, CURLOPT_HEADERDATA, t);
	/* CRLs are signed, and distribution points are plain HTTP */
	curl_easy_setopt(t->easy, CURLOPT_PROTOCOLS_STR, t->kind == 'r' ? "http" : "https");
	if (t->kind == 'q' || t->kind == 's')
	{
		curl_easy_setopt(t->easy, CURLOPT_POST, 1L);
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, t->request);
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE, (long) strlen(t->request));
	}
	else
		curl_easy_setopt(t->easy, CURLOPT_HTTPGET, 1L);
	if (curl_multi_add_handle(amulti, t->easy) != CURLM_OK)
		elog(ERROR, "could not start a libcurl transfer");
	t->busy = true;
}

/* EndTransfer - free what a transfer held */
static void
EndTransfer(Transfer *t)
{
	curl_multi_remove_handle(amulti, t->easy);
	curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, NULL);
	curl_slist_free_all(t->headers);
	t->headers = NULL;
	free(t->got.data);
	t->got.data = NULL;
	MemoryContextDelete(t->cxt);
	t->cxt = NULL;
	t->busy = false;
	t->finished = false;
}

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

/* Retryable - 429, 5xx and no answer at all are worth another attempt */
static bool
Retryable(long status)
{
	return status == 0 || status == 429 || status >= 500;
}

/* Judge - verify the answer of a finished transfer (may raise an ERROR) */
static void
Judge(Transfer *t, Outcome *o)
{
	char	   *ctype = NULL;
	Jsonb	   *payload;
	char	   *code;
	char	   *message;

	memset(o, 0, sizeof(*o));
	o->row_count = -1;
	if (t->rc != CURLE_OK)
	{
		ReuseAllowed(t->url, "");
		o->state = "pending";
		o->error_code = t->mismatch ? "IX006" : "08006";
		o->message = t->mismatch ?
			psprintf("peer at %s is not %s: its TLS certificate names \"%s\"", t->url, t->provider, t->presented) :
			psprintf("could not reach peer %s: %s", t->provider, t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->rc));
		return;
	}
	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &o->status);
	curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ctype);
	if (ctype == NULL || pg_strncasecmp(ctype, "application/jose", 16) != 0)
	{
		o->state = Retryable(o->status) ? "pending" : "failed";
		o->error_code = "IX011";
		o->message = psprintf("peer %s answered HTTP %ld without a signed body", t->provider, o->status);
		return;
	}
	o->response = pnstrdup(t->got.data ? t->got.data : "", t->got.len);
	payload = CheckResponse(o->response, t->got.len, t->provider, t->jti, t->req_hash, &code, &message);
	if (code != NULL)
	{
		o->state = Retryable(o->status) ? "pending" : "failed";
		o->error_code = psprintf("IX%03ld", o->status >= 400 && o->status <= 599 ? o->status : 500);
		o->message = psprintf("peer %s refused the request for service \"%s\": %s: %s",
							  t->provider, t->service, code, message);
		return;
	}
	if (o->status != 200)
	{
		o->state = "failed";
		o->error_code = "IX011";
		o->message = psprintf("peer %s answered HTTP %ld without an error claim", t->provider, o->status);
		return;
	}
	{
		JsonbValue	k;
		JsonbValue *v;

		k.type = jbvString;
		k.val.string.val = "rows";
		k.val.string.len = 4;
		v = findJsonbValueFromContainer(&payload->root, JB_FOBJECT, &k);
		o->row_count = (v && v->type == jbvBinary) ? JsonContainerSize(v->val.binary.data) : 0;
		k.val.string.val = "sub";
		k.val.string.len = 3;
		v = findJsonbValueFromContainer(&payload->root, JB_FOBJECT, &k);
		if (v && v->type == jbvString)
			o->subject = pnstrdup(v->val.string.val, v->val.string.len);
	}
	o->state = "done";
}

/* LogTransfer - the consumer's log record of a request sent, and its count */
static void
LogTransfer(Transfer *t, const char *subject, const char *response, long status,
			const char *error_code, const char *message, int row_count)
{
	ExchangeLog l;

	memset(&l, 0, sizeof(l));
	l.direction = "out";
	l.peer = t->provider;
	l.service = t->service;
	l.purpose = t->purpose;
	l.subject = subject;
	l.jti = t->jti;
	l.request_hash = t->req_hash;
	l.request = t->request;
	l.response = response;
	l.status = (int) status;
	l.error_code = error_code;
	l.error_message = message;
	l.row_count = row_count;
	l.duration_ms = (double) (GetCurrentTimestamp() - t->started) / 1000.0;
	LogExchange(&l);
	CountExchange('p', t->provider, (int) status, l.duration_ms, message);
}

/* Record - store the outcome of an attempt and log it; in a transaction */
static void
Record(Transfer *t, Outcome *o)
{
	Datum		values[8];
	char		nulls[9] = "        ";
	Oid			types[8] = {INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, INT4OID, INT4OID};
	bool		isnull;
	char	   *state;

	values[0] = Int64GetDatum(t->id);
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
	if (SPI_execute_with_args(
							  "UPDATE interop.async_request SET attempts = attempts + 1, http_status = $3, "
							  "error_code = $4, last_error = $5, response = $6, row_count = $7, "
							  "state = CASE WHEN $2 = 'pending' AND attempts + 1 >= $8 THEN 'failed' ELSE $2 END, "
							  "next_attempt = pg_catalog.clock_timestamp() + "
							  "  least(60, 0.5 * 2 ^ least(attempts, 10)) * interval '1 second', "
							  "completed_at = CASE WHEN $2 = 'pending' AND attempts + 1 < $8 THEN NULL "
							  "  ELSE pg_catalog.clock_timestamp() END "
							  "WHERE id = $1 RETURNING state",
							  8, types, values, nulls, false, 1) != SPI_OK_UPDATE_RETURNING || SPI_processed != 1)
		elog(ERROR, "could not update asynchronous request " INT64_FORMAT, t->id);
	state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	(void) isnull;

	LogTransfer(t, o->subject, o->response, o->status, o->error_code, o->message, o->row_count);

	if (strcmp(state, "pending") != 0)
	{
		Oid			argtype = TEXTOID;
		Datum		arg = CStringGetTextDatum(psprintf(INT64_FORMAT, t->id));

		if (SPI_execute_with_args("SELECT pg_catalog.pg_notify('interop_async', $1)", 1, &argtype, &arg,
								  NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not notify interop_async");
	}
}

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

	values[0] = CStringGetTextDatum(t->provider);
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
		elog(ERROR, "could not store the catalog of %s: %s", t->provider, SPI_result_code_string(ret));
}

/* JudgeCatalog - verify a catalog answer and store it (may raise an ERROR) */
static void
JudgeCatalog(Transfer *t)
{
	long		status = 0;
	char	   *ctype = NULL;
	const char *signer;
	size_t		plen;
	char	   *payload;
	Jsonb	   *jb;
	JsonbValue	k;
	JsonbValue *v;

	if (t->rc != CURLE_OK)
	{
		ReuseAllowed(t->url, "");
		RecordCatalog(t, 0, NULL, t->mismatch ?
					  psprintf("peer at %s is not %s: its TLS certificate names \"%s\"", t->url, t->provider, t->presented) :
					  psprintf("could not reach peer %s: %s", t->provider, t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->rc)));
		return;
	}
	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
	if (status == 304 && t->etag_sent)
	{
		RecordCatalog(t, 304, NULL, NULL);
		return;
	}
	curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ctype);
	if (status != 200 || ctype == NULL || pg_strncasecmp(ctype, "application/jose", 16) != 0)
	{
		RecordCatalog(t, status, NULL, psprintf("peer %s answered the catalog request with HTTP %ld", t->provider, status));
		return;
	}
	payload = JwsVerifyCompact(t->got.data, t->got.len, NULL, &signer, &plen);
	if (signer == NULL || strcmp(signer, t->provider) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_MEMBER_MISMATCH),
				 errmsg("catalog is not signed by %s", t->provider),
				 errdetail("It is signed by \"%s\".", signer ? signer : "(unknown)")));
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(pg_any_to_server(payload, plen, PG_UTF8))));
	k.type = jbvString;
	k.val.string.val = "services";
	k.val.string.len = 8;
	v = JB_ROOT_IS_OBJECT(jb) ? findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k) : NULL;
	if (v == NULL || v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
				 errmsg("invalid catalog from %s", t->provider),
				 errdetail("The payload has no \"services\" array.")));
	RecordCatalog(t, 200, JsonbToCString(NULL, v->val.binary.data, -1), NULL);
}

/* RecordCrl - the outcome of a CRL fetch; a failure backs off like a catalog's */
static void
RecordCrl(Transfer *t, const char *error)
{
	Datum		values[3];
	char		nulls[4] = "   ";
	Oid			types[3] = {TEXTOID, TEXTOID, INT4OID};

	values[0] = CStringGetTextDatum(t->provider);	/* the URL */
	values[1] = error ? CStringGetTextDatum(error) : (Datum) 0;
	nulls[1] = error ? ' ' : 'n';
	values[2] = Int32GetDatum(interop_sync_interval);
	if (SPI_execute_with_args(error ?
							  "UPDATE interop.crl_source SET checked_at = pg_catalog.clock_timestamp(), "
							  "failures = failures + 1, last_error = $2, next_fetch = pg_catalog.clock_timestamp() + "
							  "least(3600, 5 * 2 ^ least(failures + 1, 12)) * interval '1 s' WHERE url = $1 AND $3 IS NOT NULL" :
							  "UPDATE interop.crl_source SET checked_at = pg_catalog.clock_timestamp(), "
							  "fetched_at = pg_catalog.clock_timestamp(), failures = 0, last_error = $2, "
							  "next_fetch = pg_catalog.clock_timestamp() + $3 * interval '1 ms' WHERE url = $1",
							  3, types, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update interop.crl_source");
}

/* JudgeCrl - decode a fetched CRL (DER or PEM) and install it (may raise an ERROR) */
static void
JudgeCrl(Transfer *t)
{
	long		status = 0;
	X509_CRL   *crl = NULL;

	if (t->rc != CURLE_OK)
	{
		RecordCrl(t, psprintf("could not fetch %s: %s", t->url, t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->rc)));
		return;
	}
	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200 || t->got.len == 0)
	{
		RecordCrl(t, psprintf("%s answered HTTP %ld", t->url, status));
		return;
	}
	if (memmem(t->got.data, t->got.len, "-----BEGIN X509 CRL-----", 24) != NULL)
	{
		BIO		   *bio = BIO_new_mem_buf(t->got.data, (int) t->got.len);

		crl = bio ? PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;
		BIO_free(bio);
	}
	else
	{
		const unsigned char *p = (const unsigned char *) t->got.data;

		crl = d2i_X509_CRL(NULL, &p, (long) t->got.len);
	}
	if (crl == NULL)
	{
		ERR_clear_error();
		RecordCrl(t, psprintf("%s did not answer with a CRL (DER or PEM)", t->url));
		return;
	}
	(void) InstallCrl(crl);
	RecordCrl(t, NULL);
}

/* HasIdentity - the node has a certificate to call peers with */
static bool
HasIdentity(void)
{
	return SPI_execute("SELECT 1 FROM interop.node WHERE certificate_chain IS NOT NULL", true, 1) == SPI_OK_SELECT &&
		SPI_processed > 0;
}

/* ---- subscriptions (src/changes.c, src/subscribe.sql) ---- */

/* a pull's result, for RecordPull */
typedef struct Pull
{
	const char *state;			/* done, expired (start a new copy), failed (retry
								 * later) or stale (prefetched, not applied) */
	long		status;
	const char *error_code;
	char	   *message;
	char	   *response;
	char	   *next;			/* done: the provider's next cursor */
	bool		more;			/* done: pull again at once */
	int			nrows;			/* done: upserts + deletes */
} Pull;

/*
 * RecordPull - store the outcome of a pull with the subscription, and log
 * the exchange; in the transaction that applied the batch.  A failure
 * backs off from 0.5 s, doubling, to an hour, never sooner than "every".
 */
static void
RecordPull(Transfer *t, Pull *p)
{
	Datum		values[7];
	char		nulls[8] = "       ";
	Oid			types[7] = {INT8OID, TEXTOID, TEXTOID, INT4OID, BOOLOID, TEXTOID, TIMESTAMPTZOID};

	values[0] = Int64GetDatum(t->id);
	values[1] = CStringGetTextDatum(p->state);
	values[2] = p->next ? CStringGetTextDatum(p->next) : (Datum) 0;
	nulls[2] = p->next ? ' ' : 'n';
	values[3] = Int32GetDatum(p->nrows);
	values[4] = BoolGetDatum(p->more);
	values[5] = p->message ? CStringGetTextDatum(p->message) : (Datum) 0;
	nulls[5] = p->message ? ' ' : 'n';
	values[6] = TimestampTzGetDatum(t->started);
	if (strcmp(p->state, "stale") != 0 &&
		SPI_execute_with_args("UPDATE interop.subscription SET "
							  "cursor = CASE $2 WHEN 'done' THEN $3::jsonb WHEN 'expired' THEN NULL ELSE cursor END, "
							  "phase = CASE $2 WHEN 'done' THEN CASE WHEN $3::jsonb ? 'copy' THEN 'copy' ELSE 'sync' END "
							  "  WHEN 'expired' THEN 'copy' ELSE phase END, "
							  "rows_copied = CASE WHEN $2 = 'done' AND phase = 'copy' "
							  "  THEN CASE WHEN cursor IS NULL THEN 0 ELSE rows_copied END + $4 ELSE rows_copied END, "
							  "changes_applied = changes_applied + CASE WHEN $2 = 'done' AND phase = 'sync' THEN $4 ELSE 0 END, "
							  "batches = batches + CASE WHEN $2 = 'done' THEN 1 ELSE 0 END, "
							  "copy_started_at = CASE WHEN $2 = 'done' AND cursor IS NULL THEN $7 ELSE copy_started_at END, "
							  "copy_finished_at = CASE WHEN $2 = 'done' AND cursor IS NULL THEN NULL ELSE copy_finished_at END, "
							  "synced_at = CASE WHEN $2 = 'done' AND NOT $5 THEN $7 ELSE synced_at END, "
							  "last_pull_at = pg_catalog.clock_timestamp(), "
							  "failures = CASE WHEN $2 = 'failed' THEN failures + 1 ELSE 0 END, "
							  "last_error = $6, "
							  "next_pull = pg_catalog.clock_timestamp() + CASE "
							  "  WHEN $2 = 'done' AND $5 THEN interval '0' WHEN $2 = 'done' THEN every "
							  "  WHEN $2 = 'expired' THEN interval '0' "
							  "  ELSE greatest(every, least(3600, 0.5 * 2 ^ least(failures, 13)) * interval '1 s') END "
							  "WHERE id = $1",
							  7, types, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update subscription " INT64_FORMAT, t->id);
	if (strcmp(p->state, "done") == 0 &&
		SPI_execute_with_args("UPDATE interop.subscription SET copy_finished_at = pg_catalog.clock_timestamp() "
							  "WHERE id = $1 AND phase = 'sync' AND copy_finished_at IS NULL",
							  1, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update subscription " INT64_FORMAT, t->id);

	LogTransfer(t, NULL, p->response, p->status, p->error_code, p->message,
				strcmp(p->state, "done") == 0 ? p->nrows : -1);
}

/* ArrayClaimSize - the length of an array claim, or -1 */
static int
ArrayClaimSize(Jsonb *payload, const char *key)
{
	JsonbValue *v = ResponseClaim(payload, key);

	return (v && v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data)) ?
		(int) JsonContainerSize(v->val.binary.data) : -1;
}

/*
 * SignPull - sign t's request for the changes after t->cursor (NULL: from
 * the start), in t's memory.
 */
static void
SignPull(Transfer *t)
{
	MemoryContext old = MemoryContextSwitchTo(t->cxt);
	char	   *claims;

	t->jti = NewJti();
	claims = BuildRequest(t->provider, t->service, "{}", t->purpose, t->jti,
						  Max(60, interop_request_timeout / 1000 + interop_max_clock_skew),
						  t->cursor ? t->cursor : "null");
	t->request = JwsSignJson(claims, strlen(claims));
	t->req_hash = RequestHash(t->request, strlen(t->request));
	MemoryContextSwitchTo(old);
}

/*
 * PrefetchPull - while batch t is applied, already ask for the one after
 * it (cursor next), so that the provider reads the next page as this one
 * is written.  The answer is applied only if t's batch was: JudgeSubscription
 * checks that the stored cursor is the one the pull was made with.  Nothing
 * when no slot is free.
 */
static void
PrefetchPull(Transfer *t, const char *next)
{
	Transfer   *n = ClaimSlot('s', t->name, t->provider, t->url, NULL);
	MemoryContext old;
	int			running;

	if (n == NULL)
		return;
	old = MemoryContextSwitchTo(n->cxt);
	n->id = t->id;
	n->service = pstrdup(t->service);
	n->purpose = t->purpose ? pstrdup(t->purpose) : NULL;
	n->cursor = pstrdup(next);
	n->target = t->target;
	n->owner = pstrdup(t->owner);
	MemoryContextSwitchTo(old);
	PG_TRY();
	{
		LoadClientIdentity();
		SignPull(n);
		StartTransfer(n);
	}
	PG_CATCH();
	{
		/* not sent: free the slot, or StartDue would send it unsigned */
		if (n->busy)
			curl_multi_remove_handle(amulti, n->easy);
		curl_slist_free_all(n->headers);
		n->headers = NULL;
		n->busy = false;
		MemoryContextDelete(n->cxt);
		n->cxt = NULL;
		PG_RE_THROW();
	}
	PG_END_TRY();
	curl_multi_perform(amulti, &running);
}

/* CursorIsCopy - does this cursor (NULL: the start) ask for a page of a copy? */
static bool
CursorIsCopy(const char *cursor)
{
	Jsonb	   *jb;
	JsonbValue	k;

	if (cursor == NULL)
		return true;
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(cursor)));
	k.type = jbvString;
	k.val.string.val = "copy";
	k.val.string.len = 4;
	return JB_ROOT_IS_OBJECT(jb) && findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k) != NULL;
}

/*
 * JudgeSubscription - verify a batch and apply it with its cursor (may
 * raise an ERROR: the caller's subtransaction then rolls the batch back
 * and records the failure).
 */
static void
JudgeSubscription(Transfer *t)
{
	char	   *ctype = NULL;
	Jsonb	   *payload;
	char	   *code;
	char	   *message;
	Pull		p;
	JsonbValue *v;
	int			nup;
	int			ndel;
	int64		applied;
	Oid			owner;
	Datum		curv[2];
	Oid			curt[2] = {INT8OID, TEXTOID};
	bool		isnull;

	memset(&p, 0, sizeof(p));
	p.state = "failed";

	/* unsubscribed meanwhile: nothing to apply */
	curv[0] = Int64GetDatum(t->id);
	curv[1] = t->cursor ? CStringGetTextDatum(t->cursor) : (Datum) 0;
	if (SPI_execute_with_args("SELECT cursor IS NOT DISTINCT FROM $2::jsonb FROM interop.subscription "
							  "WHERE id = $1 FOR UPDATE",
							  2, curt, curv, t->cursor ? "  " : " n", false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read subscription " INT64_FORMAT, t->id);
	if (SPI_processed == 0)
		return;
	curv[0] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!DatumGetBool(curv[0]))
	{
		/* prefetched after a batch that was then not applied */
		p.state = "stale";
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &p.status);
		p.response = t->got.data ? pnstrdup(t->got.data, t->got.len) : NULL;
		p.message = pstrdup("not applied: the batch before it was not applied");
		RecordPull(t, &p);
		return;
	}

	if (t->rc != CURLE_OK)
	{
		ReuseAllowed(t->url, "");
		p.error_code = t->mismatch ? "IX006" : "08006";
		p.message = t->mismatch ?
			psprintf("peer at %s is not %s: its TLS certificate names \"%s\"", t->url, t->provider, t->presented) :
			psprintf("could not reach peer %s: %s", t->provider, t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->rc));
		RecordPull(t, &p);
		return;
	}
	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &p.status);
	curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ctype);
	if (ctype == NULL || pg_strncasecmp(ctype, "application/jose", 16) != 0)
	{
		p.error_code = "IX011";
		p.message = psprintf("peer %s answered HTTP %ld without a signed body", t->provider, p.status);
		RecordPull(t, &p);
		return;
	}
	p.response = pnstrdup(t->got.data ? t->got.data : "", t->got.len);
	payload = CheckResponse(p.response, t->got.len, t->provider, t->jti, t->req_hash, &code, &message);
	if (code != NULL)
	{
		p.state = p.status == 410 ? "expired" : "failed";
		p.error_code = psprintf("IX%03ld", p.status >= 400 && p.status <= 599 ? p.status : 500);
		p.message = psprintf("peer %s refused the changes of service \"%s\": %s: %s",
							 t->provider, t->service, code, message);
		RecordPull(t, &p);
		return;
	}
	nup = ArrayClaimSize(payload, "upserts");
	ndel = ArrayClaimSize(payload, "deletes");
	v = ResponseClaim(payload, "next");
	if (p.status != 200 || nup < 0 || ndel < 0 || v == NULL || v->type != jbvBinary ||
		!JsonContainerIsObject(v->val.binary.data) || ArrayClaimSize(payload, "key") < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
				 errmsg("invalid batch from %s", t->provider),
				 errdetail("HTTP %ld; a batch has the claims key, upserts, deletes and next.", p.status)));
	p.next = JsonbToCString(NULL, v->val.binary.data, -1);
	v = ResponseClaim(payload, "more");
	p.more = v != NULL && v->type == jbvBool && v->val.boolean;
	p.nrows = nup + ndel;

	owner = get_role_oid(t->owner, true);
	if (!OidIsValid(owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" of subscription " INT64_FORMAT " does not exist", t->owner, t->id),
				 errhint("Subscribe again as an existing role.")));
	if (p.more)
		PrefetchPull(t, p.next);
	ApplyChanges(t->target, owner, payload, t->cursor == NULL, CursorIsCopy(t->cursor), &applied);
	p.state = "done";
	RecordPull(t, &p);
}

/* JudgeAndRecord - one finished transfer, in a subtransaction of its own */
static void
JudgeAndRecord(Transfer *t)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Outcome		o;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		if (t->kind == 'c')
			JudgeCatalog(t);
		else if (t->kind == 'r')
			JudgeCrl(t);
		else if (t->kind == 's')
			JudgeSubscription(t);
		else
		{
			Judge(t, &o);
			Record(t, &o);
		}
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;

		if (t->kind == 'r')
		{
			RecordCrl(t, edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message);
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
			return;
		}
		if (t->kind == 'c')
		{
			RecordCatalog(t, 0, NULL, edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message);
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
			return;
		}
		if (t->kind == 's')
		{
			/* not applied: the cursor stays, and the pull is retried later */
			Pull		p;

			memset(&p, 0, sizeof(p));
			p.state = "failed";
			curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &p.status);
			p.error_code = unpack_sql_state(edata->sqlerrcode);
			p.message = edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message;
			RecordPull(t, &p);
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
			return;
		}
		/* the answer did not verify: that does not get better by asking again */
		memset(&o, 0, sizeof(o));
		o.state = "failed";
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &o.status);
		o.error_code = unpack_sql_state(edata->sqlerrcode);
		o.message = edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message;
		o.row_count = -1;
		Record(t, &o);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
}

/* Harvest - store the outcomes of the finished transfers; how many */
static int
Harvest(void)
{
	CURLMsg    *msg;
	int			left;
	int			n = 0;

	while ((msg = curl_multi_info_read(amulti, &left)) != NULL)
	{
		if (msg->msg != CURLMSG_DONE)
			continue;
		for (int i = 0; i < ASYNC_CONCURRENCY; i++)
			if (transfers[i].busy && transfers[i].easy == msg->easy_handle)
			{
				transfers[i].finished = true;
				transfers[i].rc = msg->data.result;
				n++;
			}
	}
	if (n == 0)
		return 0;

	BeginWorkerTransaction();
	for (int i = 0; i < ASYNC_CONCURRENCY; i++)
		if (transfers[i].busy && transfers[i].finished)
		{
			MemoryContext old = MemoryContextSwitchTo(transfers[i].cxt);

			JudgeAndRecord(&transfers[i]);
			MemoryContextSwitchTo(old);
		}
	EndWorkerTransaction();

	/* only now, with every outcome committed */
	for (int i = 0; i < ASYNC_CONCURRENCY; i++)
		if (transfers[i].busy && transfers[i].finished)
			EndTransfer(&transfers[i]);
	return n;
}

/*
 * DueOfKind - run sql, which selects due work of one kind: $1 is the names
 * (provider or URL) of that kind's transfers in flight, $2 how many slots
 * are free.  Returns the number of rows in SPI_tuptable; 0 when no slot is
 * free.
 */
static uint64
DueOfKind(char kind, const char *sql)
{
	Datum	   *busy = palloc(sizeof(Datum) * ASYNC_CONCURRENCY);
	int			nbusy = 0;
	int			nfree = 0;
	Datum		values[2];
	Oid			types[2] = {TEXTARRAYOID, INT4OID};

	for (int i = 0; i < ASYNC_CONCURRENCY; i++)
	{
		if (transfers[i].cxt == NULL)
			nfree++;
		else if (transfers[i].kind == kind)
			busy[nbusy++] = CStringGetTextDatum(transfers[i].name);
	}
	if (nfree == 0)
		return 0;
	values[0] = PointerGetDatum(construct_array(busy, nbusy, TEXTOID, -1, false, TYPALIGN_INT));
	values[1] = Int32GetDatum(nfree);
	if (SPI_execute_with_args(sql, 2, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not look for due work: %s", sql);
	return SPI_processed;
}

/*
 * ClaimSlot - a free slot for a transfer of kind to url; name is what
 * DueOfKind knows it by, provider the member id the TLS peer must be (or
 * the URL).  Its memory is the slot's context.  NULL when none is free.
 */
static Transfer *
ClaimSlot(char kind, const char *name, const char *provider, const char *url, const char *etag)
{
	Transfer   *t = NULL;
	MemoryContext old;

	for (int i = 0; i < ASYNC_CONCURRENCY && t == NULL; i++)
		if (transfers[i].cxt == NULL)
			t = &transfers[i];
	if (t == NULL)
		return NULL;
	t->cxt = AllocSetContextCreate(TopMemoryContext, "interop transfer", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(t->cxt);
	t->kind = kind;
	t->id = 0;
	t->name = pstrdup(name);
	t->provider = pstrdup(provider);
	t->url = pstrdup(url);
	t->etag_sent = etag ? pstrdup(etag) : NULL;
	t->request = t->jti = t->req_hash = t->service = t->purpose = NULL;
	t->cursor = t->owner = NULL;
	t->target = InvalidOid;
	MemoryContextSwitchTo(old);
	return t;
}

/*
 * StartCatalogs - claim free slots for the peers whose catalog is due: never
 * fetched, or next_check passed.  In StartDue's transaction.
 */
static void
StartCatalogs(void)
{
	SPITupleTable *tt;
	uint64		nrows;

	/* no identity to call peers with yet: nothing to do */
	if (!HasIdentity())
		return;
	nrows = DueOfKind('c', "SELECT p.member_id::text, p.base_url, c.etag FROM interop.peer p "
					  "LEFT JOIN interop.peer_catalog c ON c.peer = p.member_id "
					  "WHERE coalesce(c.next_check, '-infinity') <= pg_catalog.clock_timestamp() "
					  "AND p.member_id::text <> ALL ($1) ORDER BY c.next_check NULLS FIRST LIMIT $2");
	tt = SPI_tuptable;
	if (nrows > 0)
		LoadClientIdentity();
	for (uint64 r = 0; r < nrows; r++)
		if (ClaimSlot('c', SPI_getvalue(tt->vals[r], tt->tupdesc, 1), SPI_getvalue(tt->vals[r], tt->tupdesc, 1),
					  psprintf("%s/v1/catalog", SPI_getvalue(tt->vals[r], tt->tupdesc, 2)),
					  SPI_getvalue(tt->vals[r], tt->tupdesc, 3)) == NULL)
			break;
}

/*
 * StartCrls - record the CRL distribution points named by the trust anchors
 * and the node's chain (every sync_interval), and claim free slots for the
 * due ones.  In StartDue's transaction.
 */
static void
StartCrls(void)
{
	static TimestampTz last_discovery = 0;
	TimestampTz now = GetCurrentTimestamp();
	SPITupleTable *tt;
	uint64		nrows;

	if (last_discovery == 0 || now - last_discovery >= (int64) interop_sync_interval * 1000)
	{
		List	   *urls = NIL;
		ListCell   *lc;

		if (SPI_execute("SELECT certificate FROM interop.trust_anchor UNION ALL "
						"SELECT certificate_chain FROM interop.node WHERE certificate_chain IS NOT NULL",
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the certificates");
		tt = SPI_tuptable;
		for (uint64 r = 0; r < SPI_processed; r++)
			urls = CrlDistributionPoints(SPI_getvalue(tt->vals[r], tt->tupdesc, 1), urls);
		foreach(lc, urls)
		{
			Datum		u = CStringGetTextDatum(lfirst(lc));
			Oid			ut = TEXTOID;

			if (SPI_execute_with_args("INSERT INTO interop.crl_source (url) VALUES ($1) ON CONFLICT DO NOTHING",
									  1, &ut, &u, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not write interop.crl_source");
		}
		last_discovery = now;
	}

	nrows = DueOfKind('r', "SELECT url FROM interop.crl_source WHERE next_fetch <= pg_catalog.clock_timestamp() "
					  "AND url <> ALL ($1) ORDER BY next_fetch LIMIT $2");
	tt = SPI_tuptable;
	for (uint64 r = 0; r < nrows; r++)
	{
		char	   *url = SPI_getvalue(tt->vals[r], tt->tupdesc, 1);

		if (ClaimSlot('r', url, url, url, NULL) == NULL)
			break;
	}
}

/*
 * StartSubscriptions - claim free slots for the subscriptions due for a
 * pull, each with a freshly signed request carrying its cursor.  In
 * StartDue's transaction.
 */
static void
StartSubscriptions(void)
{
	SPITupleTable *tt;
	uint64		nrows;

	if (!HasIdentity())
		return;
	nrows = DueOfKind('s', "SELECT s.id::text, s.provider::text, p.base_url, s.service, s.purpose, "
					  "s.cursor::text, s.target::oid, s.owner::text "
					  "FROM interop.subscription s JOIN interop.peer p ON p.member_id = s.provider "
					  "WHERE s.next_pull <= pg_catalog.clock_timestamp() AND s.id::text <> ALL ($1) "
					  "ORDER BY s.next_pull LIMIT $2");
	tt = SPI_tuptable;
	if (nrows > 0)
		LoadClientIdentity();
	for (uint64 r = 0; r < nrows; r++)
	{
		HeapTuple	tup = tt->vals[r];
		Transfer   *t = ClaimSlot('s', SPI_getvalue(tup, tt->tupdesc, 1), SPI_getvalue(tup, tt->tupdesc, 2),
								  psprintf("%s/v1/changes", SPI_getvalue(tup, tt->tupdesc, 3)), NULL);
		MemoryContext old;
		bool		isnull;

		if (t == NULL)
			break;
		old = MemoryContextSwitchTo(t->cxt);
		t->id = DatumGetInt64(DirectFunctionCall1(int8in, CStringGetDatum(t->name)));
		t->service = SPI_getvalue(tup, tt->tupdesc, 4);
		t->purpose = SPI_getvalue(tup, tt->tupdesc, 5);
		t->cursor = SPI_getvalue(tup, tt->tupdesc, 6);
		t->target = DatumGetObjectId(SPI_getbinval(tup, tt->tupdesc, 7, &isnull));
		t->owner = SPI_getvalue(tup, tt->tupdesc, 8);
		MemoryContextSwitchTo(old);
		SignPull(t);
	}
}

/*
 * StartDue - start the due requests, as many as there are free slots.
 * Requests without a stored request are signed and stored first, and that
 * is committed before anything is sent.  Returns how many started.
 */
static int
StartDue(void)
{
	int			nfree = 0;
	Datum	   *busy_ids;
	int			nbusy = 0;
	Datum		values[2];
	Oid			types[2] = {INT8ARRAYOID, INT4OID};
	int			started = 0;
	uint64		nrows;
	SPITupleTable *tt;

	for (int i = 0; i < ASYNC_CONCURRENCY; i++)
		if (!transfers[i].busy)
			nfree++;
	if (nfree == 0)
		return 0;

	BeginWorkerTransaction();

	busy_ids = palloc(sizeof(Datum) * ASYNC_CONCURRENCY);
	for (int i = 0; i < ASYNC_CONCURRENCY; i++)
		if (transfers[i].busy)
			busy_ids[nbusy++] = Int64GetDatum(transfers[i].id);
	values[0] = PointerGetDatum(construct_array(busy_ids, nbusy, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = Int32GetDatum(nfree);
	if (SPI_execute_with_args("SELECT a.id, a.provider::text, a.service, a.purpose, a.params::text, a.jti::text, "
							  "a.request, a.attempts, p.base_url "
							  "FROM interop.async_request a LEFT JOIN interop.peer p ON p.member_id = a.provider "
							  "WHERE a.state = 'pending' AND a.next_attempt <= pg_catalog.clock_timestamp() "
							  "AND a.id <> ALL ($1) ORDER BY a.next_attempt, a.id LIMIT $2",
							  2, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.async_request");
	nrows = SPI_processed;
	tt = SPI_tuptable;
	if (nrows > 0)
		LoadClientIdentity();

	for (uint64 r = 0; r < nrows; r++)
	{
		HeapTuple	tup = tt->vals[r];
		TupleDesc	desc = tt->tupdesc;
		bool		isnull;
		Transfer   *t = NULL;
		MemoryContext old;
		char	   *base_url = SPI_getvalue(tup, desc, 9);

		for (int i = 0; i < ASYNC_CONCURRENCY && t == NULL; i++)
			if (!transfers[i].busy && transfers[i].cxt == NULL)
				t = &transfers[i];
		if (t == NULL)
			break;
		t->cxt = AllocSetContextCreate(TopMemoryContext, "interop async transfer", ALLOCSET_SMALL_SIZES);
		old = MemoryContextSwitchTo(t->cxt);
		t->kind = 'q';
		t->etag_sent = NULL;
		t->name = NULL;
		t->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		t->provider = SPI_getvalue(tup, desc, 2);
		t->service = SPI_getvalue(tup, desc, 3);
		t->purpose = SPI_getvalue(tup, desc, 4);
		t->jti = SPI_getvalue(tup, desc, 6);
		t->request = SPI_getvalue(tup, desc, 7);
		t->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
		t->url = base_url ? psprintf("%s/v1/query", base_url) : NULL;
		if (t->url == NULL)
		{
			/* the peer was removed since: nothing to send it to */
			Outcome		o;

			memset(&o, 0, sizeof(o));
			o.state = "failed";
			o.error_code = "42704";
			o.message = psprintf("peer \"%s\" is not known", t->provider);
			o.row_count = -1;
			t->started = GetCurrentTimestamp();
			MemoryContextSwitchTo(old);
			Record(t, &o);
			MemoryContextDelete(t->cxt);
			t->cxt = NULL;
			continue;
		}
		if (t->request == NULL && t->url != NULL)
		{
			char	   *claims = BuildRequest(t->provider, t->service, SPI_getvalue(tup, desc, 5),
											  t->purpose, t->jti, ASYNC_LIFETIME, NULL);
			Datum		args[2];
			Oid			argtypes[2] = {INT8OID, TEXTOID};

			t->request = JwsSignJson(claims, strlen(claims));
			args[0] = Int64GetDatum(t->id);
			args[1] = CStringGetTextDatum(t->request);
			MemoryContextSwitchTo(old);
			if (SPI_execute_with_args("UPDATE interop.async_request SET request = $2 WHERE id = $1",
									  2, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not store the request of " INT64_FORMAT, t->id);
			MemoryContextSwitchTo(t->cxt);
		}
		if (t->request)
			t->req_hash = RequestHash(t->request, strlen(t->request));
		MemoryContextSwitchTo(old);
	}
	StartCatalogs();
	StartCrls();
	StartSubscriptions();
	EndWorkerTransaction();

	/* the requests are stored: send them */
	for (int i = 0; i < ASYNC_CONCURRENCY; i++)
	{
		Transfer   *t = &transfers[i];

		if (t->busy || t->cxt == NULL)
			continue;
		StartTransfer(t);
		started++;
	}
	return started;
}

/*
 * AsyncWorkerRound - one round of deliveries; lowers *timeout (ms, -1:
 * none) to when the worker should look again.  woken: the latch was set
 * (work was committed) since the last round.
 */
void
AsyncWorkerRound(long *timeout, bool woken)
{
	static TimestampTz next_look = 0;
	int			running = 0;
	int			active = 0;
	TimestampTz now;

	PrepareTransfers();
	curl_multi_perform(amulti, &running);

	/*
	 * Look for due work when there may be some: new work was committed (the
	 * latch), a slot was freed, or a quarter second passed (due retries,
	 * catalogs, CRLs).  Not at every turn while transfers are in flight.
	 */
	now = GetCurrentTimestamp();
	if (Harvest() > 0 || woken || now >= next_look)
	{
		next_look = TimestampTzPlusMilliseconds(now, 250);
		if (StartDue() > 0)
			curl_multi_perform(amulti, &running);
	}

	for (int i = 0; i < ASYNC_CONCURRENCY; i++)
		if (transfers[i].busy)
			active++;
	if (active > 0)
	{
		/* transfers in flight: let libcurl wait on its sockets for a while */
		curl_multi_poll(amulti, NULL, 0, 10, NULL);
		*timeout = 0;
		return;
	}

	/* nothing in flight: sleep until the next retry is due */
	{
		bool		isnull;
		int64		ms;
		Datum		d;

		BeginWorkerTransaction();
		/* NULL when nothing is scheduled (greatest() would ignore it: "now") */
		if (SPI_execute("SELECT (extract(epoch FROM least("
						"  (SELECT min(next_attempt) FROM interop.async_request WHERE state = 'pending'), "
						"  (SELECT min(coalesce(c.next_check, '-infinity')) FROM interop.peer p "
						"   LEFT JOIN interop.peer_catalog c ON c.peer = p.member_id "
						"   WHERE EXISTS (SELECT 1 FROM interop.node WHERE certificate_chain IS NOT NULL)), "
						"  (SELECT min(next_fetch) FROM interop.crl_source), "
						"  (SELECT min(next_pull) FROM interop.subscription)) "
						"  - pg_catalog.clock_timestamp()) * 1000)::bigint", true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read interop.async_request");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		ms = isnull ? -1 : Max(10, DatumGetInt64(d));
		EndWorkerTransaction();
		if (ms >= 0 && (*timeout < 0 || ms < *timeout))
			*timeout = (long) Min(ms, 60000);
		/* distribution points are looked for every sync_interval */
		if (*timeout < 0 || *timeout > interop_sync_interval)
			*timeout = interop_sync_interval;
	}
}

/*
 * AsyncWorkerReset - after an ERROR in a round: drop every transfer and
 * handle.  The requests stay pending in the table and are sent again, as
 * the same bytes.
 */
void
AsyncWorkerReset(void)
{
	for (int i = 0; i < ASYNC_CONCURRENCY; i++)
	{
		Transfer   *t = &transfers[i];

		if (t->busy && amulti != NULL)
			curl_multi_remove_handle(amulti, t->easy);
		curl_slist_free_all(t->headers);
		t->headers = NULL;
		free(t->got.data);
		t->got.data = NULL;
		if (t->cxt)
			MemoryContextDelete(t->cxt);
		t->cxt = NULL;
		t->busy = t->finished = false;
	}
	ResetTransfers();
}
