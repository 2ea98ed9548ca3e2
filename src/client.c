/*-------------------------------------------------------------------------
 *
 * client.c
 *	  The consumer side: interop.query() and interop.catalog() call a peer's
 *	  gateway over HTTPS with libcurl.
 *
 * One libcurl multi handle and one easy handle per backend, kept across
 * calls, so TLS connections to peers are reused (HTTP/1.1 keep-alive).  The
 * wait is curl_multi_poll() in slices of 100 ms with CHECK_FOR_INTERRUPTS()
 * between them, so pg_cancel_backend() and statement_timeout stop a call;
 * CURLOPT_NOSIGNAL keeps libcurl away from PostgreSQL's SIGALRM.
 *
 * TLS identity (DESIGN §5): the client presents the node's certificate
 * chain and key, verifies the provider's certificate against the trust
 * anchors and CRLs (the same X509_STORE that verifies signatures, set as
 * the context's verify store, which libcurl does not touch; libcurl's own
 * check and its CA bundle are off), and checks that the certificate names the
 * member id it meant to call, not a host name.  That check runs in OpenSSL's verify callback, which must not
 * raise an ERROR through libcurl, so it records what it saw and the caller
 * turns that into the ERROR afterwards.  A connection is reused only for
 * the member id it was verified for.
 *
 * A request is signed, sent, and its answer verified (protocol.c), including
 * the "req" binding to the request bytes.  The consumer's message_log record
 * is written in the calling transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

static CURLM *multi = NULL;
static CURL *easy = NULL;
static uint64 easy_generation = 0;

/* what the verify callback saw, for the ERROR after the transfer */
static char expected_member[256];
static char presented_member[256];
static bool member_mismatch = false;

/* the member id each base URL's open connection was verified for */
typedef struct VerifiedUrl
{
	char		url[512];
	char		member[256];
} VerifiedUrl;
#define VERIFIED_URLS 32
static VerifiedUrl verified_urls[VERIFIED_URLS];

/* the identity handed to the SSL_CTX callback */
typedef struct TlsIdentity
{
	X509_STORE *store;
	X509	   *leaf;
	STACK_OF(X509) *chain;
	EVP_PKEY   *key;
} TlsIdentity;
static TlsIdentity tls_identity;

/* WriteBody - libcurl write callback: append, within max_response_size */
size_t
WriteBody(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	Body	   *b = userdata;
	size_t		n = size * nmemb;

	if (b->len + n > (size_t) interop_max_response_size)
	{
		b->too_large = true;
		return 0;
	}
	if (b->len + n + 1 > b->cap)
	{
		size_t		cap = Max(b->cap * 2, b->len + n + 1);
		char	   *p = realloc(b->data, Max(cap, 8192));

		if (p == NULL)
			return 0;
		b->data = p;
		b->cap = Max(cap, 8192);
	}
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/*
 * VerifyPeer - OpenSSL verify callback: the trust store's rules (a missing
 * CRL is accepted), then the leaf must name the expected member id.
 */
static int
VerifyPeer(int ok, X509_STORE_CTX *ctx)
{
	ok = TrustVerifyCallback(ok, ctx);
	if (ok && X509_STORE_CTX_get_error_depth(ctx) == 0)
	{
		X509	   *cert = X509_STORE_CTX_get_current_cert(ctx);
		X509_NAME  *name = X509_get_subject_name(cert);
		char		cn[256];

		presented_member[0] = '\0';
		if (X509_NAME_get_text_by_NID(name, NID_commonName, cn, sizeof(cn)) > 0)
			strlcpy(presented_member, cn, sizeof(presented_member));
		if (strcmp(presented_member, expected_member) != 0)
		{
			member_mismatch = true;
			X509_STORE_CTX_set_error(ctx, X509_V_ERR_APPLICATION_VERIFICATION);
			return 0;
		}
	}
	return ok;
}

/* SslCtxSetup - libcurl's SSL_CTX callback: our identity and trust */
static CURLcode
SslCtxSetup(CURL *curl, void *sslctx, void *parm)
{
	return ClientTlsSetup(sslctx, VerifyPeer) ? CURLE_OK : CURLE_SSL_CERTPROBLEM;
}

/*
 * ClientTlsSetup - a client SSL_CTX with the node's identity and our trust
 * store; verify is the callback that checks the peer's member id.  False
 * when OpenSSL refused a part of it.
 */
bool
ClientTlsSetup(SSL_CTX *ctx, SSL_verify_cb verify)
{
	TlsIdentity *id = &tls_identity;

	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);

	/*
	 * The peer is verified against the verify store, which libcurl never
	 * touches (it loads and swaps the context's cert_store, at a moment that
	 * differs between its versions).  So our trust store is neither filled
	 * with public CAs nor replaced by them.
	 */
	if (SSL_CTX_set1_verify_cert_store(ctx, id->store) != 1)
		return false;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify);
	if (SSL_CTX_use_certificate(ctx, id->leaf) != 1 ||
		SSL_CTX_use_PrivateKey(ctx, id->key) != 1)
		return false;
	for (int i = 1; i < sk_X509_num(id->chain); i++)
		if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(id->chain, i)) != 1)
			return false;
	return true;
}

/* ResetHandles - drop the connections (trust or identity changed) */
static void
ResetHandles(void)
{
	if (easy)
		curl_easy_cleanup(easy);
	if (multi)
		curl_multi_cleanup(multi);
	easy = NULL;
	multi = NULL;
	memset(verified_urls, 0, sizeof(verified_urls));
}

/*
 * PrepareHandles - the per-backend handles, set up with the node identity.
 * Raises an ERROR when the node cannot make TLS connections yet.
 */
/*
 * LoadClientIdentity - the node's certificate, key and trust store for
 * ClientTlsSetup().  Raises an ERROR when the node has no certificate.
 */
void
LoadClientIdentity(void)
{
	NodeState  *st = GetNodeState();
	X509_STORE *store = LoadTrustStore();

	if (st->chain == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this node has no certificate yet"),
				 errdetail("A node calls peers with its certificate as TLS client certificate."),
				 errhint("Install one with interop.install_certificate().")));
	tls_identity.store = store;
	tls_identity.leaf = sk_X509_value(st->chain, 0);
	tls_identity.chain = st->chain;
	tls_identity.key = st->key;
}

static void
PrepareHandles(void)
{
	/* the store and key belong to caches that a trust change frees */
	if (easy != NULL && easy_generation != interop_identity_generation)
		ResetHandles();
	LoadClientIdentity();
	if (easy != NULL)
		return;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
		elog(ERROR, "could not initialise libcurl");
	multi = curl_multi_init();
	easy = curl_easy_init();
	if (multi == NULL || easy == NULL)
	{
		ResetHandles();
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("could not create a libcurl handle")));
	}
	easy_generation = interop_identity_generation;
	ConfigureEasy(easy, SslCtxSetup, &tls_identity);
}

/*
 * ConfigureEasy - the options every transfer to a peer has: HTTPS only, no
 * redirects, the TLS checks described at the top, our identity through the
 * SSL_CTX callback ctxfunc(ctxdata).
 */
void
ConfigureEasy(void *e, void *ctxfunc, void *ctxdata)
{
	CURL	   *easy = e;

	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);

	/*
	 * The peer is verified by OpenSSL itself, with our trust store and the
	 * verify callback that SslCtxSetup installs (SSL_VERIFY_PEER: a failed
	 * check aborts the handshake).  libcurl's own check stays off and it
	 * gets no CA file: it would only parse the system bundle (20 ms per
	 * connection) for a store that is not used.  The host name is not
	 * checked: the certificate's member id is, instead.
	 */
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
	curl_easy_setopt(easy, CURLOPT_CAINFO, "/dev/null");	/* NULL means the default bundle */
	curl_easy_setopt(easy, CURLOPT_CAPATH, NULL);
	curl_easy_setopt(easy, CURLOPT_SSL_CTX_FUNCTION, ctxfunc);
	curl_easy_setopt(easy, CURLOPT_SSL_CTX_DATA, ctxdata);
	curl_easy_setopt(easy, CURLOPT_SSL_SESSIONID_CACHE, 0L);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, WriteBody);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "interop/" INTEROP_VERSION);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
}

/* the result of one HTTP exchange */
typedef struct HttpResult
{
	long		status;
	char	   *content_type;
	char	   *body;
	size_t		len;
} HttpResult;

/* TransportError - the ERROR for a transfer that did not complete */
static void
TransportError(CURLcode rc, const char *url, const char *errbuf, const Body *body)
{
	if (member_mismatch)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_MEMBER_MISMATCH),
				 errmsg("peer at %s is not %s", url, expected_member),
				 errdetail("Its TLS certificate names \"%s\".", presented_member),
				 errhint("Check the base URL of the peer with SELECT * FROM interop.peer.")));
	if (rc == CURLE_OPERATION_TIMEDOUT)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("peer %s did not answer within interop.request_timeout (%d ms)",
						expected_member, interop_request_timeout),
				 errdetail("URL %s: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(rc))));
	if (body->too_large)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("answer of peer %s is larger than interop.max_response_size (%d bytes)",
						expected_member, interop_max_response_size),
				 errhint("Filter on more columns, or raise interop.max_response_size.")));
	/*
	 * A handshake cut by the peer (its gateway worker died, the node is
	 * restarting) is a lost connection, not a trust problem.
	 */
	if ((rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CONNECT_ERROR ||
		 rc == CURLE_SSL_CERTPROBLEM) &&
		!(rc == CURLE_SSL_CONNECT_ERROR &&
		  (strstr(errbuf, "reset by peer") || strstr(errbuf, "SSL_ERROR_SYSCALL") ||
		   strstr(errbuf, "unexpected eof"))))
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_UNTRUSTED_CERTIFICATE),
				 errmsg("TLS handshake with peer %s failed", expected_member),
				 errdetail("URL %s: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(rc)),
				 errhint("Both nodes must have certificates from a trust anchor of the other; see interop.trust_anchor.")));
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("could not reach peer %s", expected_member),
			 errdetail("URL %s: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(rc)),
			 errhint("Check that the peer's gateway runs and that interop.peer has its base URL.")));
}

/* ReuseAllowed - may an open connection to url serve a call to member? */
bool
ReuseAllowed(const char *url, const char *member)
{
	VerifiedUrl *free_slot = NULL;

	for (int i = 0; i < VERIFIED_URLS; i++)
	{
		VerifiedUrl *v = &verified_urls[i];

		if (v->url[0] == '\0')
		{
			if (free_slot == NULL)
				free_slot = v;
			continue;
		}
		if (strcmp(v->url, url) == 0)
		{
			bool		same = strcmp(v->member, member) == 0;

			strlcpy(v->member, member, sizeof(v->member));
			return same;
		}
	}
	if (free_slot == NULL)
		free_slot = &verified_urls[random() % VERIFIED_URLS];
	strlcpy(free_slot->url, url, sizeof(free_slot->url));
	strlcpy(free_slot->member, member, sizeof(free_slot->member));
	return false;
}

/*
 * HttpExchange - one HTTPS request to a peer; method "POST" with a body or
 * "GET".  Waits with interrupts checked; raises an ERROR when no HTTP
 * answer arrived.
 */
static void
HttpExchange(const char *member, const char *url, const char *body, HttpResult *res)
{
	Body		got = {0};
	struct curl_slist *volatile headers = NULL;
	char		errbuf[CURL_ERROR_SIZE];
	volatile bool added = false;
	volatile CURLcode rc = CURLE_OK;

	PrepareHandles();
	strlcpy(expected_member, member, sizeof(expected_member));
	member_mismatch = false;
	presented_member[0] = '\0';
	errbuf[0] = '\0';

	PG_TRY();
	{
		CURLMcode	mrc;
		int			running = 1;
		CURLMsg    *msg;
		int			left;
		char	   *ctype = NULL;

		headers = curl_slist_append(headers, "Accept: application/jose");
		headers = curl_slist_append(headers, "Expect:");
		if (body)
			headers = curl_slist_append(headers, "Content-Type: application/jose");
		curl_easy_setopt(easy, CURLOPT_URL, url);
		curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
		curl_easy_setopt(easy, CURLOPT_WRITEDATA, &got);
		curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) interop_request_timeout);
		curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(interop_request_timeout, 10000));
		curl_easy_setopt(easy, CURLOPT_FRESH_CONNECT, ReuseAllowed(url, member) ? 0L : 1L);
		if (body)
		{
			curl_easy_setopt(easy, CURLOPT_POST, 1L);
			curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
			curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) strlen(body));
		}
		else
			curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);

		if (curl_multi_add_handle(multi, easy) != CURLM_OK)
			elog(ERROR, "could not start a libcurl transfer");
		added = true;
		while (running)
		{
			mrc = curl_multi_perform(multi, &running);
			if (mrc != CURLM_OK)
				elog(ERROR, "libcurl failed: %s", curl_multi_strerror(mrc));
			if (!running)
				break;
			mrc = curl_multi_poll(multi, NULL, 0, 100, NULL);
			if (mrc != CURLM_OK)
				elog(ERROR, "libcurl failed: %s", curl_multi_strerror(mrc));
			CHECK_FOR_INTERRUPTS();
		}
		while ((msg = curl_multi_info_read(multi, &left)) != NULL)
			if (msg->msg == CURLMSG_DONE)
				rc = msg->data.result;
		if (rc != CURLE_OK)
		{
			/* the verdict on this URL's connection is void */
			ReuseAllowed(url, "");
			TransportError(rc, url, errbuf, &got);
		}
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &res->status);
		curl_easy_getinfo(easy, CURLINFO_CONTENT_TYPE, &ctype);
		res->content_type = ctype ? pstrdup(ctype) : NULL;
		res->body = pnstrdup(got.data ? got.data : "", got.len);
		res->len = got.len;
	}
	PG_FINALLY();
	{
		if (added)
			curl_multi_remove_handle(multi, easy);
		curl_easy_setopt(easy, CURLOPT_HTTPHEADER, NULL);
		curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, NULL);
		curl_slist_free_all(headers);
		free(got.data);
	}
	PG_END_TRY();
}

/* PeerBaseUrl - the base URL of a known peer, or an ERROR */
static char *
PeerBaseUrl(const char *member)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(member)};
	int			ret;

	ret = ExecuteCached("SELECT base_url FROM interop.peer WHERE member_id = $1::interop.member_id",
						1, argtypes, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.peer: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("peer \"%s\" is not known", member),
				 errhint("Add it with SELECT interop.add_peer('%s', 'https://host:port');", member)));
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/* IsJose - is the answer a JWS? */
static bool
IsJose(const HttpResult *r)
{
	return r->content_type != NULL && pg_strncasecmp(r->content_type, "application/jose", 16) == 0;
}

/* UnsignedAnswerError - the ERROR for an answer that is not a JWS */
static void
UnsignedAnswerError(const char *member, const HttpResult *r)
{
	char	   *excerpt = pnstrdup(r->body, Min(r->len, 200));

	for (char *p = excerpt; *p; p++)
		if ((unsigned char) *p < 0x20 || (unsigned char) *p >= 0x7f)
			*p = '?';
	ereport(ERROR,
			(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
			 errmsg("peer %s answered HTTP %ld without a signed body", member, r->status),
			 errdetail("Content-Type %s; the body begins: %s",
					   r->content_type ? r->content_type : "(none)", excerpt),
			 errhint("An unsigned answer is never trusted.  Check that the base URL points at an interop gateway.")));
}

/* RowsToTuplestore - the rows of a verified answer, one jsonb object each */
int
RowsToTuplestore(Jsonb *payload, Tuplestorestate *ts, TupleDesc desc)
{
	JsonbValue *columns = ResponseClaim(payload, "columns");
	JsonbValue *rows = ResponseClaim(payload, "rows");
	int			ncols;
	int			nrows;
	JsonbValue **names;

	if (columns == NULL || columns->type != jbvBinary || !JsonContainerIsArray(columns->val.binary.data) ||
		rows == NULL || rows->type != jbvBinary || !JsonContainerIsArray(rows->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
				 errmsg("invalid response: \"columns\" and \"rows\" must be arrays")));
	ncols = JsonContainerSize(columns->val.binary.data);
	nrows = JsonContainerSize(rows->val.binary.data);
	names = palloc(sizeof(JsonbValue *) * Max(ncols, 1));
	for (int i = 0; i < ncols; i++)
	{
		JsonbValue *c = getIthJsonbValueFromContainer(columns->val.binary.data, i);
		JsonbValue *n = NULL;

		if (c != NULL && c->type == jbvBinary && JsonContainerIsObject(c->val.binary.data))
			n = getKeyJsonValueFromContainer(c->val.binary.data, "name", 4, NULL);
		if (n == NULL || n->type != jbvString)
			ereport(ERROR,
					(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
					 errmsg("invalid response: column %d has no name", i + 1)));
		names[i] = n;
	}
	for (int r = 0; r < nrows; r++)
	{
		JsonbValue *row = getIthJsonbValueFromContainer(rows->val.binary.data, r);
		JsonbParseState *state = NULL;
		JsonbValue *obj;
		Datum		value;
		bool		isnull = false;

		if (row == NULL || row->type != jbvBinary || !JsonContainerIsArray(row->val.binary.data) ||
			(int) JsonContainerSize(row->val.binary.data) != ncols)
			ereport(ERROR,
					(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
					 errmsg("invalid response: row %d is not an array of %d values", r + 1, ncols)));
		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		for (int c = 0; c < ncols; c++)
		{
			pushJsonbValue(&state, WJB_KEY, names[c]);
			pushJsonbValue(&state, WJB_VALUE, getIthJsonbValueFromContainer(row->val.binary.data, c));
		}
		obj = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
		value = JsonbPGetDatum(JsonbValueToJsonb(obj));
		tuplestore_putvalues(ts, desc, &value, &isnull);
	}
	return nrows;
}

/* PeerRefusal - the ERROR for a signed refusal */
static void
PeerRefusal(const char *member, const char *service, long status, const char *code, const char *message)
{
	ereport(ERROR,
			(errcode(ERRCODE_INTEROP_PEER_STATUS(status >= 400 && status <= 599 ? status : 500)),
			 errmsg("peer %s refused the request for service \"%s\": %s", member, service, code),
			 errdetail("HTTP %ld, error \"%s\": %s", status, code, message),
			 strcmp(code, "access_denied") == 0 || strcmp(code, "purpose_not_allowed") == 0 ?
			 errhint("The provider grants access with interop.grant_access().") : 0));
}

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
	HttpResult res;				/* status 0 until an answer arrived */
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
	char	   *url;
	char	   *request;
	Jsonb	   *payload;
	char	   *code;
	char	   *message;

	url = psprintf("%s/v1/query", PeerBaseUrl(c->provider));

	/* sign and send */
	c->jti = NewJti();
	request = BuildRequest(c->provider, c->service, c->params_json, c->purpose, c->jti,
						   Max(60, interop_request_timeout / 1000 + interop_max_clock_skew), NULL);
	c->request = JwsSignJson(request, strlen(request));
	c->req_hash = RequestHash(c->request, strlen(c->request));
	HttpExchange(c->provider, url, c->request, &c->res);

	/* verify the answer */
	if (!IsJose(&c->res))
		UnsignedAnswerError(c->provider, &c->res);
	payload = CheckResponse(c->res.body, c->res.len, c->provider, c->jti, c->req_hash, &code, &message);
	if (code != NULL)
		PeerRefusal(c->provider, c->service, c->res.status, code, message);
	if (c->res.status != 200)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
				 errmsg("peer %s answered HTTP %ld without an error claim", c->provider, c->res.status)));
	c->nrows = RowsToTuplestore(payload, rsinfo->setResult, rsinfo->setDesc);
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
	log->response = c->res.status != 0 && IsJose(&c->res) ? c->res.body : NULL;
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

PG_FUNCTION_INFO_V1(interop_catalog);
/*
 * interop_catalog - the services a peer grants this node, from its signed
 * GET /v1/catalog, verified.
 */
Datum
interop_catalog(PG_FUNCTION_ARGS)
{
	char	   *provider = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *url;
	HttpResult res;
	const char *signer;
	size_t		plen;
	char	   *payload;
	Jsonb	   *jb;
	JsonbValue *v;
	int			ret;

	MemoryContext cxt = CurrentMemoryContext;

	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
	url = MemoryContextStrdup(cxt, psprintf("%s/v1/catalog", PeerBaseUrl(provider)));
	SPI_finish();

	HttpExchange(provider, url, NULL, &res);
	if (!IsJose(&res))
		UnsignedAnswerError(provider, &res);
	payload = JwsVerifyCompact(res.body, res.len, NULL, &signer, &plen);
	if (signer == NULL || strcmp(signer, provider) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_MEMBER_MISMATCH),
				 errmsg("catalog is not signed by %s", provider),
				 errdetail("It is signed by \"%s\".", signer ? signer : "(unknown)")));
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
											CStringGetDatum(pg_any_to_server(payload, plen, PG_UTF8))));
	v = JB_ROOT_IS_OBJECT(jb) ? ResponseClaim(jb, "error") : NULL;
	if (v != NULL && v->type == jbvBinary)
		PeerRefusal(provider, "(catalog)", res.status, "catalog refused",
					JsonbToCString(NULL, v->val.binary.data, -1));
	v = JB_ROOT_IS_OBJECT(jb) ? ResponseClaim(jb, "services") : NULL;
	if (res.status != 200 || v == NULL || v->type != jbvBinary)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
				 errmsg("invalid catalog from %s", provider),
				 errdetail("HTTP %ld; the payload has no \"services\" array.", res.status)));
	PG_RETURN_JSONB_P(JsonbValueToJsonb(v));
}
