/*-------------------------------------------------------------------------
 *
 * client.c
 *	  The consumer side of a query: interop.query() calls a peer's gateway
 *	  over HTTPS (src/peerhttp.c), verifies the signed answer (src/protocol.c)
 *	  and returns its rows.
 *
 * A request is signed, sent, and its answer verified, including the "req"
 * binding to the request bytes.  The consumer's message_log record of every
 * call, answered or failed, is handed to the log writer and committed by it
 * (src/msglog.c) before any row is returned: a ROLLBACK of the calling
 * transaction cannot remove it.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"

/* one call of interop.query(), kept in memory that an ERROR cannot clobber */
typedef struct Call
{
	char	   *provider;
	char	   *service;
	char	   *params_json;
	char	   *purpose;
	char	   *jti;
	char	   *request;
	char	   *req_hash;
	PeerAnswer	res;			/* status 0 until an answer arrived */
	char	   *subject;		/* the answer's "sub" claim */
	int			nrows;
	TimestampTz started;
} Call;

/*
 * CallPeer - sign the request, send it, verify the answer and put its rows
 * in the tuplestore.  The caller is connected to SPI.
 */
static void
CallPeer(Call *c, ReturnSetInfo *rsinfo)
{
	List	   *urls;
	char	   *request;
	Jsonb	   *payload;
	char	   *code;
	char	   *message;

	urls = PeerBaseUrls(c->provider, CurrentMemoryContext);

	/* sign and send */
	c->jti = NewJti();
	request = BuildRequest(c->provider, c->service, c->params_json, c->purpose, c->jti,
						   Max(60, interop_request_timeout / 1000 + interop_max_clock_skew), NULL);
	c->request = JwsSignJson(request, strlen(request), JWS_TYP_REQUEST);
	c->req_hash = Sha256Base64Url(c->request, strlen(c->request));
	PeerExchange(c->provider, urls, "/v1/query", c->request, &c->res);

	/* verify the answer */
	PeerAnswerSigned(c->provider, &c->res);
	payload = CheckResponse(c->res.body, c->res.len, c->provider, c->jti, c->req_hash, &code, &message);
	if (code != NULL)
		PeerRefusal(c->provider, c->service, c->res.status, code, message);
	if (c->res.status != 200)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
				 errmsg("peer %s answered HTTP %ld without an error claim", c->provider, c->res.status)));
	c->nrows = AnswerRowsToTuplestore(payload, rsinfo->setResult, rsinfo->setDesc);
	{
		JsonbValue *sub = ResponseClaim(payload, "sub");

		if (sub != NULL && sub->type == jbvString)
			c->subject = pnstrdup(sub->val.string.val, sub->val.string.len);
	}
}

/* CallLog - the consumer's record of a call */
static void
CallLog(const Call *c, ExchangeLog *log, const char *error_code, const char *error_message)
{
	memset(log, 0, sizeof(*log));
	log->direction = "out";
	log->peer = c->provider;
	log->service = c->service;
	log->purpose = c->purpose;
	log->subject = c->subject;
	log->jti = c->jti;
	log->request_hash = c->req_hash;
	log->request = c->request;
	log->response = c->res.status != 0 && JoseMediaType(c->res.content_type) ? c->res.body : NULL;
	log->status = (int) c->res.status;
	log->error_code = error_code;
	log->error_message = error_message;
	log->row_count = error_code ? -1 : c->nrows;
	log->duration_ms = (double) (GetCurrentTimestamp() - c->started) / 1000.0;
}

PG_FUNCTION_INFO_V1(interop_query);
/*
 * interop_query - call a service of a peer; returns its rows as jsonb
 * objects after verifying the answer.  Every call, successful or not, is
 * logged outside the calling transaction (LogExchangeDurably), so that
 * neither a ROLLBACK nor the call's own ERROR can remove its record; the
 * rows are returned only after the record is committed.
 */
Datum
interop_query(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext cxt = CurrentMemoryContext;
	Call	   *c = palloc0(sizeof(Call));
	ExchangeLog log;
	int			ret;

	RefuseOnStandby("interop.query()");
	RequireSynchronousLog("interop.query()");

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("provider and service must not be null")));
	c->started = GetCurrentTimestamp();
	c->provider = text_to_cstring(PG_GETARG_TEXT_PP(0));
	c->service = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (PG_ARGISNULL(2))
		c->params_json = "{}";
	else
	{
		Jsonb	   *params = PG_GETARG_JSONB_P(2);

		if (!JB_ROOT_IS_OBJECT(params) || JB_ROOT_IS_SCALAR(params))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("params must be a JSON object"),
					 errhint("Example: '{\"id\": \"38001010000\"}'")));
		c->params_json = JsonbToCString(NULL, &params->root, VARSIZE(params));
	}
	c->purpose = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));

	PG_TRY();
	{
		CallPeer(c, rsinfo);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/*
		 * Record the failure before the ERROR goes on.  The record is handed
		 * to another process; this one only copies memory and waits.
		 */
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		CallLog(c, &log, unpack_sql_state(edata->sqlerrcode),
				edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message);
		CountExchange('p', c->provider, log.status, log.duration_ms, log.error_message);
		LogExchangeAutonomously(&log);
		ReThrowError(edata);
	}
	PG_END_TRY();

	/* before SPI_finish: the call's strings live in SPI's memory */
	CallLog(c, &log, NULL, NULL);
	CountExchange('p', c->provider, log.status, log.duration_ms, NULL);
	(void) LogExchangeDurably(&log);
	SPI_finish();
	return (Datum) 0;
}

