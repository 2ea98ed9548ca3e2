/*-------------------------------------------------------------------------
 *
 * gateway.c
 *	  The HTTPS gateway: background workers that answer other nodes.
 *
 * interop.gateway_workers processes, registered by _PG_init() when the
 * library is preloaded.  Each opens its own listening socket on
 * interop.listen_addresses:interop.port with SO_REUSEPORT, so the kernel
 * spreads connections over them, and runs one libevent loop: evhttp over
 * OpenSSL bufferevents.  Nothing here runs in a second thread.
 *
 * TLS: 1.2 or newer, the node's own key and certificate chain (or
 * interop.tls_cert_file / tls_key_file), and client certificates verified
 * against the trust anchors and CRLs of interop.trust_anchor / interop.crl
 * (required when interop.require_client_cert is on).  The context is built
 * again when those tables or the node identity change (the relcache
 * callbacks bump interop_identity_generation) and on SIGHUP; connections
 * already open keep the context they started with.
 *
 * A request reads top to bottom in HandleQuery():
 *	  parse -> verify (CheckRequest) -> replay check -> authorize and run
 *	  (ServeRequest) -> sign -> log -> commit -> answer,
 * all in one transaction; the answer leaves only after the log record is
 * committed (a node that cannot log does not answer).  A request that fails
 * verification, or any ERROR, is answered by AnswerFailure(): a signed error
 * logged in a transaction of its own.  ERRORs never cross libevent: every
 * callback catches them.
 *
 * Signals: SIGTERM sets a flag (and cancels a running query); SIGHUP
 * re-reads the configuration and rebuilds the TLS context.  A timer checks
 * both, and the postmaster's health, five times a second.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/syncrep.h"
#include "replication/walsender.h"
#include "storage/ipc.h"
#include "storage/pmsignal.h"
#include "storage/procsignal.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/varlena.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#define GATEWAY_MAX_HEADERS_SIZE 16384
#define GATEWAY_MAX_SOCKETS 16

static volatile sig_atomic_t shutdown_requested = false;
static struct event_base *base = NULL;
static SSL_CTX *tls_ctx = NULL;
static uint64 tls_generation = 0;
static bool in_request = false;

/*
 * Overload: each worker counts its TLS connections that completed their
 * handshake (the info callback marks the connection's SSL object when the
 * handshake is done; the mark's free callback decrements the count).
 * Connections that never finish a handshake do not count, so idle TCP
 * connections cannot crowd out authenticated clients; evhttp's timeout
 * cuts them.  A connection whose handshake completes beyond
 * interop.gateway_max_connections is marked as overflow: its requests get
 * a signed 429 and it is closed, while connections already open go on
 * being served.
 */
#define CONNECTION_NORMAL ((void *) 1)
#define CONNECTION_OVERFLOW ((void *) 2)
static int connection_mark = -1;
static int open_connections = 0;

/* RegisterGatewayWorkers - one background worker per interop.gateway_workers */
void
RegisterGatewayWorkers(void)
{
	for (int i = 0; i < interop_gateway_workers; i++)
		RegisterInteropWorker("GatewayMain", psprintf("interop gateway %d", i + 1),
							  "interop gateway", Int32GetDatum(i + 1));
}

/* GatewaySigterm - stop after the current request; cancel its query */
static void
GatewaySigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	shutdown_requested = true;
	if (in_request)
	{
		QueryCancelPending = true;
		InterruptPending = true;
	}
	SetLatch(MyLatch);
	errno = save_errno;
}

/* ---- TLS ---- */

/* TlsError - an ERROR with OpenSSL's reasons */
static void
TlsError(const char *msg, const char *hint) pg_attribute_noreturn();
static void
TlsError(const char *msg, const char *hint)
{
	OpenSSLError(ERRCODE_CONFIG_FILE_ERROR, msg, hint);
}

/*
 * GatewayStaple - OpenSSL's status callback: a client that asks for the
 * certificate's status (status_request) gets the node's stored OCSP answer
 * about its own certificate, when a fresh one (or one that says revoked) is
 * in the trust store the context was built with
 */
static int
GatewayStaple(SSL *ssl, void *arg)
{
	unsigned char *der;
	int			len;
	X509	   *leaf = SSL_get_certificate(ssl);

	if (leaf == NULL || !OcspStaple(SSL_CTX_get_cert_store(SSL_get_SSL_CTX(ssl)), leaf, &der, &len))
		return SSL_TLSEXT_ERR_NOACK;
	if (SSL_set_tlsext_status_ocsp_resp(ssl, der, len) != 1)
	{
		OPENSSL_free(der);
		return SSL_TLSEXT_ERR_NOACK;
	}
	return SSL_TLSEXT_ERR_OK;	/* OpenSSL frees der */
}

/*
 * BuildTlsContext - a server context with the node's identity (or the
 * configured files) that verifies clients against the trust store.  Runs
 * in a transaction.
 */
static SSL_CTX *
BuildTlsContext(void)
{
	SSL_CTX    *ctx;
	X509_STORE *store;

	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL)
		TlsError("could not create a TLS context", NULL);
	PG_TRY();
	{
		SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
		SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
		SSL_CTX_set_session_id_context(ctx, (const unsigned char *) "interop", 7);

		if (interop_tls_cert_file[0] != '\0' || interop_tls_key_file[0] != '\0')
		{
			if (interop_tls_cert_file[0] == '\0' || interop_tls_key_file[0] == '\0')
				ereport(ERROR,
						(errcode(ERRCODE_CONFIG_FILE_ERROR),
						 errmsg("interop.tls_cert_file and interop.tls_key_file must be set together")));
			if (SSL_CTX_use_certificate_chain_file(ctx, interop_tls_cert_file) != 1)
				TlsError(psprintf("could not load the gateway certificate \"%s\"", interop_tls_cert_file),
						 "The file must hold the PEM certificate chain, leaf first.");
			if (SSL_CTX_use_PrivateKey_file(ctx, interop_tls_key_file, SSL_FILETYPE_PEM) != 1)
				TlsError(psprintf("could not load the gateway key \"%s\"", interop_tls_key_file), NULL);
		}
		else
		{
			NodeState  *st = GetNodeState();

			if (st->chain == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("the node has no certificate yet"),
						 errhint("Install one with interop.install_certificate(), or set interop.tls_cert_file and interop.tls_key_file.")));
			if (SSL_CTX_use_certificate(ctx, sk_X509_value(st->chain, 0)) != 1)
				TlsError("could not use the node certificate for TLS", NULL);
			for (int i = 1; i < sk_X509_num(st->chain); i++)
				if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(st->chain, i)) != 1)
					TlsError("could not use the node certificate chain for TLS", NULL);
			if (SSL_CTX_use_PrivateKey(ctx, st->key) != 1)
				TlsError("could not use the node key for TLS", NULL);
		}
		if (SSL_CTX_check_private_key(ctx) != 1)
			TlsError("the gateway key does not match its certificate", NULL);

		store = LoadTrustStore();
		SSL_CTX_set1_cert_store(ctx, store);
		SSL_CTX_set_tlsext_status_cb(ctx, GatewayStaple);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER |
						   (interop_require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
						   NULL);
		SSL_CTX_set_verify_depth(ctx, 10);
	}
	PG_CATCH();
	{
		SSL_CTX_free(ctx);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return ctx;
}

/* RefreshTlsContext - rebuild the context if the identity or trust changed */
static void
RefreshTlsContext(bool force)
{
	SSL_CTX    *ctx;

	if (!interop_tls || (!force && tls_ctx != NULL && tls_generation == interop_identity_generation))
		return;
	tls_generation = interop_identity_generation;
	ctx = BuildTlsContext();
	if (tls_ctx != NULL)
		SSL_CTX_free(tls_ctx);	/* open connections hold their own reference */
	tls_ctx = ctx;
}

/* ConnectionFreed - OpenSSL frees a connection's SSL: one connection less */
static void
ConnectionFreed(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	if (ptr != NULL)
		open_connections--;
}

/*
 * TlsInfo - OpenSSL's info callback.  A completed handshake counts as an
 * open connection.  A fatal alert this end sends during the handshake (a
 * client certificate refused, say) is made to arrive: with TLS 1.3 the
 * client's last flight and often its request are already here, and closing
 * a socket with unread data sends a reset that overtakes the alert, so the
 * client would report a broken connection instead of why it was refused.
 * What has arrived is discarded and the sending side closed after the
 * alert; the connection is then closed as usual.
 */
static void
TlsInfo(const SSL *ssl, int where, int ret)
{
	if ((where & SSL_CB_HANDSHAKE_DONE) && SSL_get_ex_data(ssl, connection_mark) == NULL)
	{
		open_connections++;
		SSL_set_ex_data((SSL *) ssl, connection_mark, open_connections > interop_gateway_max_connections ?
						CONNECTION_OVERFLOW : CONNECTION_NORMAL);
	}
	if ((where & SSL_CB_ALERT) && (where & SSL_CB_WRITE) && (ret >> 8) == SSL3_AL_FATAL &&
		!SSL_is_init_finished(ssl))
	{
		int			fd = SSL_get_fd(ssl);
		char		discard[4096];

		CountRefusedHandshake(ret & 0xff);
		if (fd < 0)
			return;
		/* what is there now, bounded: the handshake is over either way */
		for (int i = 0; i < 64 && recv(fd, discard, sizeof(discard), MSG_DONTWAIT) > 0; i++)
			;
		shutdown(fd, SHUT_WR);
	}
}

/* NewConnection - a TLS bufferevent for a connection evhttp accepted */
static struct bufferevent *
NewConnection(struct event_base *b, void *arg)
{
	SSL		   *ssl = SSL_new(tls_ctx);
	struct bufferevent *bev;

	if (ssl == NULL)
		return NULL;
	SSL_set_info_callback(ssl, TlsInfo);
	bev = bufferevent_openssl_socket_new(b, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
										 BEV_OPT_CLOSE_ON_FREE);
	if (bev != NULL)
		bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

/* Overflowing - did this request's connection arrive beyond the limit? */
static bool
Overflowing(struct evhttp_request *hreq)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(hreq);
	struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
	SSL		   *ssl = bev && interop_tls ? bufferevent_openssl_get_ssl(bev) : NULL;

	return ssl != NULL && SSL_get_ex_data(ssl, connection_mark) == CONNECTION_OVERFLOW;
}

/*
 * ClientMember - the member id named by the verified TLS client certificate:
 * NULL when there is none, "" when it names no member id.
 */
static const char *
ClientMember(struct evhttp_request *hreq)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(hreq);
	struct bufferevent *bev;
	SSL		   *ssl;
	X509	   *cert;
	char	   *member;

	if (!interop_tls || conn == NULL)
		return NULL;
	bev = evhttp_connection_get_bufferevent(conn);
	ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
	cert = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
	if (cert == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
		return NULL;
	member = CertificateMemberId(cert);
	return member ? member : "";
}

/* ClientAddress - "address:port" of the caller */
static char *
ClientAddress(struct evhttp_request *hreq)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(hreq);
	char	   *addr = NULL;
	ev_uint16_t port = 0;

	if (conn == NULL)
		return NULL;
	evhttp_connection_get_peer(conn, &addr, &port);
	return addr ? psprintf("%s:%u", addr, port) : NULL;
}

/* ---- answers ---- */

/* an answer ready to send */
typedef struct Answer
{
	int			status;
	const char *content_type;
	char	   *body;
	size_t		len;
	const char *etag;			/* an ETag header, when set */
	const char *allow;			/* 405: the Allow header */
} Answer;

/* ReasonPhrase - the HTTP reason phrase of a status */
static const char *
ReasonPhrase(int status)
{
	switch (status)
	{
		case 200:
			return "OK";
		case 400:
			return "Bad Request";
		case 401:
			return "Unauthorized";
		case 403:
			return "Forbidden";
		case 404:
			return "Not Found";
		case 405:
			return "Method Not Allowed";
		case 409:
			return "Conflict";
		case 410:
			return "Gone";
		case 413:
			return "Payload Too Large";
		case 429:
			return "Too Many Requests";
		case 503:
			return "Service Unavailable";
		default:
			return "Internal Server Error";
	}
}

/* Send - write an answer */
static void
Send(struct evhttp_request *hreq, const Answer *a)
{
	struct evbuffer *out = evbuffer_new();
	struct evkeyvalq *headers = evhttp_request_get_output_headers(hreq);

	if (out == NULL)
	{
		evhttp_send_error(hreq, 500, NULL);
		return;
	}
	if (a->etag)
		evhttp_add_header(headers, "ETag", a->etag);
	if (a->status == 304)
	{
		evhttp_send_reply(hreq, 304, "Not Modified", NULL);
		evbuffer_free(out);
		return;
	}
	evbuffer_add(out, a->body, a->len);
	evhttp_add_header(headers, "Content-Type", a->content_type);
	evhttp_add_header(headers, "Cache-Control", "no-store");
	if (a->status == 405 && a->allow)
		evhttp_add_header(headers, "Allow", a->allow);
	if (a->status == 429)
	{
		evhttp_add_header(headers, "Retry-After", "1");
		evhttp_add_header(headers, "Connection", "close");
	}
	evhttp_send_reply(hreq, a->status, ReasonPhrase(a->status), out);
	evbuffer_free(out);
}

/* PlainAnswer - an unsigned answer (used only when nothing can be signed) */
static void
PlainAnswer(Answer *a, int status, const char *code, const char *message)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"error\":{\"code\":");
	escape_json(&buf, code);
	appendStringInfoString(&buf, ",\"message\":");
	escape_json(&buf, message);
	appendStringInfoString(&buf, "}}");
	a->status = status;
	a->content_type = "application/json";
	a->body = buf.data;
	a->len = buf.len;
}

/*
 * SignedAnswer - sign a payload built by protocol.c, into the request's
 * memory context: every SPI call leaves CurrentMemoryContext at SPI's
 * procedure context, which the commit frees before the answer is sent.
 */
static void
SignedAnswer(Answer *a, MemoryContext cxt, int status, const char *payload)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

	a->status = status;
	a->content_type = "application/jose";
	a->body = JwsSignJson(payload, strlen(payload), JWS_TYP_RESPONSE);
	a->len = strlen(a->body);
	MemoryContextSwitchTo(oldcxt);
}

/* ---- one request ---- */

/* what is known of a request, for its log record and its answer */
struct Exchange
{
	const char *body;			/* the request bytes */
	size_t		len;
	const char *tls_member;
	char	   *client;
	TimestampTz started;
	MemoryContext cxt;			/* the request's: what must outlive the commit */
	ExchangeRequest req;		/* filled by CheckRequest as far as it got */
	bool		changes;		/* POST /v1/changes rather than /v1/query */
	bool		monitor;		/* came in on the monitoring listener */
	ExchangeLog log;
	Answer		answer;
	/* for sending it: */
	struct evhttp_request *hreq;
	const char *counted_as;		/* CountExchange's name */
};

/*
 * ---- group commit ----
 *
 * A request's transaction commits without waiting for its WAL flush, and
 * its answer is held back: the worker goes on with the requests that are
 * ready meanwhile, and once none is left (an event of the lowest priority,
 * which libevent runs only when no other event is active) it flushes the
 * WAL once, up to the last of their commits, and sends all the answers
 * held.  A request that committed nothing waits with them but needs no
 * flush of its own, as a read-only transaction of PostgreSQL's needs none.
 * No answer leaves before its log record is flushed, as before; one flush
 * serves every request that finished while the previous one was being
 * written.  The batch is bounded (GROUP_COMMIT_MAX) and is sent before the
 * worker stops.
 *
 * Only where a local flush is all a commit waits for: with
 * interop.require_synchronous_log on, or synchronous_commit waiting for a
 * synchronous standby, each commit waits as PostgreSQL's own does and its
 * answer is sent at once.
 */
#define GROUP_COMMIT_MAX 64

typedef struct Exchange Exchange;
static Exchange *held[GROUP_COMMIT_MAX];
static int	nheld = 0;
static XLogRecPtr held_flush = InvalidXLogRecPtr;
static struct event *flush_event = NULL;
static bool commit_async = false;	/* this request's commits do not flush */

static void SendHeld(void);
static void SendAnswer(Exchange *x);

/* GroupCommitAllowed - whether a commit needs no more than a local flush */
static bool
GroupCommitAllowed(void)
{
	if (interop_require_synchronous_log)
		return false;
	return !(SyncRepRequested() && SyncRepStandbyNames != NULL && SyncRepStandbyNames[0] != '\0');
}

/* BeginRequest - a transaction and SPI, with the memory context kept */
static void
BeginRequest(MemoryContext cxt)
{
	BeginWorkerTransaction();
	if (commit_async)
		(void) set_config_option("synchronous_commit", "off", PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	MemoryContextSwitchTo(cxt);
}

/*
 * AbortRequest - in a PG_CATCH: the error, copied into the request's
 * memory, and the transaction rolled back.
 */
static ErrorData *
AbortRequest(MemoryContext cxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	disable_timeout(STATEMENT_TIMEOUT, false);
	AbortCurrentTransaction();
	MemoryContextSwitchTo(cxt);
	return edata;
}

/* EndRequest - commit */
static void
EndRequest(MemoryContext cxt)
{
	EndWorkerTransaction();
	MemoryContextSwitchTo(cxt);
}

/* PrintableJws - the body if it can be kept as a JWS in the log, else NULL */
static char *
PrintableJws(const char *body, size_t len)
{
	if (len == 0 || len > (size_t) interop_max_request_size)
		return NULL;
	for (size_t i = 0; i < len; i++)
		if (!(isalnum((unsigned char) body[i]) || body[i] == '-' || body[i] == '_' || body[i] == '.'))
			return NULL;
	return pnstrdup(body, len);
}

/* FinishLog - fill the common fields of the log record */
static void
FinishLog(Exchange *x, int status, const char *code, const char *message)
{
	ExchangeLog *l = &x->log;

	l->direction = "in";
	l->request_hash = x->req.hash;
	l->request = PrintableJws(x->body, x->len);
	l->response = x->answer.content_type && strcmp(x->answer.content_type, "application/jose") == 0 ?
		x->answer.body : NULL;
	l->status = status;
	l->error_code = code;
	l->error_message = message;
	l->client = x->client;
	l->duration_ms = (double) (GetCurrentTimestamp() - x->started) / 1000.0;
}

/*
 * AnswerReplay - a request whose jti was served before: the same bytes get
 * the logged answer again; other bytes get 409.
 */
static void
AnswerReplay(Exchange *x, const LoggedAnswer *first)
{
	ExchangeRequest *req = &x->req;

	x->log.replay_of = first->id;
	if (first->request_hash != NULL && strcmp(first->request_hash, req->hash) == 0 &&
		first->response != NULL)
	{
		x->answer.status = first->status;
		x->answer.content_type = "application/jose";
		x->answer.body = MemoryContextStrdup(x->cxt, first->response);
		x->answer.len = strlen(x->answer.body);
		FinishLog(x, first->status, first->status == 200 ? NULL : "retry", NULL);
		x->log.error_code = first->status == 200 ? NULL : x->log.error_code;
	}
	else
	{
		char	   *msg = psprintf("jti %s was already used by another request of %s", req->jti, req->iss);

		SignedAnswer(&x->answer, x->cxt, 409, BuildError(req->iss, req->jti, req->hash, "replayed", msg));
		FinishLog(x, 409, "replayed", msg);
	}
	if (LogExchange(&x->log) == 0)
		elog(ERROR, "a replayed request was recorded as a first request");
}

/*
 * ServeVerified - the steps after verification, in the request's
 * transaction: replay check, authorize and run, sign, log.
 */
static void
ServeVerified(Exchange *x)
{
	ExchangeRequest *req = &x->req;
	ServiceRequest sreq;
	ServiceAnswer ans;
	ServiceRefusal refusal;
	LoggedAnswer first;
	bool		ok;
	char	   *payload;
	char	   *answer_json = NULL;

	x->log.peer = req->iss;
	x->log.service = req->svc;
	x->log.purpose = req->purpose;
	x->log.jti = req->jti;
	x->log.row_count = -1;

	/* jti not seen before (or the same request again) */
	if (FindFirstRecord(req->iss, req->jti, &first))
	{
		/*
		 * The same request again, whose answer the log did not keep
		 * (interop.log_bodies = off): a read is answered anew.
		 */
		if (first.request_hash != NULL && strcmp(first.request_hash, req->hash) == 0 &&
			first.response != NULL && !LoggedBodyKept(first.response))
			x->log.replay_of = first.id;
		else
		{
			AnswerReplay(x, &first);
			return;
		}
	}

	/* authorize and run, within the request timeout */
	sreq.service = req->svc;
	sreq.consumer = req->iss;
	sreq.params = req->params;
	sreq.purpose = req->purpose;
	enable_timeout_after(STATEMENT_TIMEOUT, interop_request_timeout);
	if (x->changes)
		ok = ServeChanges(&sreq, req->since, &ans, &answer_json, &refusal);
	else if ((ok = ServeRequest(&sreq, &ans, &refusal)))
		answer_json = AnswerJson(&ans);
	disable_timeout(STATEMENT_TIMEOUT, false);

	/* sign */
	if (ok)
	{
		payload = BuildAnswer(req, ans.subject, answer_json);
		if (strlen(payload) > (size_t) interop_max_response_size)
		{
			ok = false;
			refusal.http_status = 413;
			refusal.code = "too_large";
			refusal.message = psprintf("the answer is %zu bytes; interop.max_response_size is %d; filter on more columns",
									   strlen(payload), interop_max_response_size);
		}
	}
	if (!ok)
		payload = BuildError(req->iss, req->jti, req->hash, refusal.code, refusal.message);
	SignedAnswer(&x->answer, x->cxt, ok ? 200 : refusal.http_status, payload);

	/* log */
	x->log.legal_basis = ans.legal_basis;
	x->log.subject = ans.subject;
	x->log.consent_id = ans.consent_id;
	x->log.row_count = ok ? ans.nrows : -1;
	FinishLog(x, x->answer.status, ok ? NULL : refusal.code, ok ? NULL : refusal.message);
	if (LogExchange(&x->log) == 0 && x->log.replay_of == 0)
	{
		/* the same jti was answered meanwhile by another worker: that answer stands */
		x->log.legal_basis = x->log.subject = NULL;
		x->log.consent_id = 0;
		x->log.row_count = -1;
		if (!FindFirstRecord(req->iss, req->jti, &first))
			elog(ERROR, "the first record of jti %s vanished", req->jti);
		AnswerReplay(x, &first);
	}
}

/*
 * AnswerFailure - answer a request that failed verification or raised an
 * ERROR: a signed error carrying what could be read of the request, logged
 * in a transaction of its own.  If even that fails the node answers 500
 * unsigned and unlogged, and says so in the server log.
 */
static void
AnswerFailure(Exchange *x, ErrorData *edata, MemoryContext cxt)
{
	int			status;
	const char *code;
	char	   *message;
	ExchangeRequest *req = &x->req;

	WireErrorFor(edata->sqlerrcode, &status, &code);
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED && shutdown_requested)
	{
		/* cancelled by a shutdown, not by the time limit: worth a retry */
		status = 503;
		code = "shutting_down";
		message = pstrdup("the provider is shutting down; retry");
	}
	else if (status == 500 && strcmp(code, "timeout") != 0)
	{
		ereport(LOG,
				(errmsg("interop gateway: request from %s failed: %s", x->client ? x->client : "?", edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0));
		message = pstrdup("internal error; the provider's server log has the details");
	}
	else if (status == 500)
		message = psprintf("the service did not answer within interop.request_timeout (%d ms)",
						   interop_request_timeout);
	else
		message = edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message;

	PG_TRY();
	{
		BeginRequest(cxt);
		memset(&x->log, 0, sizeof(x->log));
		/* the verified member: the issuer once checked, else the signer */
		x->log.peer = req->iss ? req->iss : req->signer;
		x->log.service = req->iss ? req->svc : NULL;
		x->log.purpose = req->iss ? req->purpose : NULL;
		x->log.jti = req->jti;
		x->log.row_count = -1;
		SignedAnswer(&x->answer, cxt, status, BuildError(req->iss, req->jti, req->hash, code, message));
		FinishLog(x, status, code, message);
		if (LogExchange(&x->log) == 0)
			elog(ERROR, "a failed request was recorded as a first request");
		EndRequest(cxt);
	}
	PG_CATCH();
	{
		ErrorData  *e2 = AbortRequest(cxt);

		ereport(LOG,
				(errmsg("interop gateway: could not sign or log the answer to a failed request: %s", e2->message),
				 errdetail("The request failed with: %s", edata->message)));
		PlainAnswer(&x->answer, 500, "internal_error", "the provider could not log this exchange");
	}
	PG_END_TRY();
}

/* RequestBody - the request bytes, contiguous */
static void
RequestBody(struct evhttp_request *hreq, Exchange *x)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(hreq);

	x->len = evbuffer_get_length(in);
	x->body = x->len ? (const char *) evbuffer_pullup(in, -1) : "";
}

/* HandleQuery - POST /v1/query, and POST /v1/changes (x->changes, see HandleChanges) */
static void
HandleQuery(struct evhttp_request *hreq, Exchange *x, MemoryContext cxt)
{
	const char *ctype = evhttp_find_header(evhttp_request_get_input_headers(hreq), "Content-Type");
	volatile bool failed = false;
	ErrorData  *edata = NULL;

	RequestBody(hreq, x);
	x->req.hash = Sha256Base64Url(x->body, x->len);
	PG_TRY();
	{
		BeginRequest(cxt);
		if (!JoseMediaType(ctype))
			ereport(ERROR,
					(errcode(ERRCODE_INTEROP_INVALID_MESSAGE),
					 errmsg("wrong content type"),
					 errdetail("A request is sent as Content-Type: application/jose, not %s.",
							   ctype ? ctype : "without a content type")));
		CheckRequest(x->body, x->len, x->tls_member, &x->req);
		pgstat_report_activity(STATE_RUNNING, psprintf("POST /v1/%s %s from %s", x->changes ? "changes" : "query",
													   x->req.svc, x->req.iss));
		ServeVerified(x);
		EndRequest(cxt);
	}
	PG_CATCH();
	{
		edata = AbortRequest(cxt);
		failed = true;
	}
	PG_END_TRY();
	if (failed)
		AnswerFailure(x, edata, cxt);
}

/* HandleCatalog - GET /v1/catalog: the services this client may call, signed (catalog.c) */
static void
HandleCatalog(struct evhttp_request *hreq, Exchange *x, MemoryContext cxt)
{
	PG_TRY();
	{
		BeginRequest(cxt);
		if (x->tls_member == NULL || x->tls_member[0] == '\0')
			SignedAnswer(&x->answer, cxt, 401,
						 BuildError(NULL, NULL, NULL, "client_certificate_required",
									"the catalog lists the services granted to the member named by the TLS client certificate"));
		else
		{
			char	   *etag;
			char	   *jws = CatalogAnswer(x->tls_member,
											evhttp_find_header(evhttp_request_get_input_headers(hreq), "If-None-Match"),
											&etag);

			x->answer.etag = MemoryContextStrdup(cxt, etag);
			if (jws == NULL)
				x->answer.status = 304;
			else
			{
				x->answer.status = 200;
				x->answer.content_type = "application/jose";
				x->answer.body = MemoryContextStrdup(cxt, jws);
				x->answer.len = strlen(x->answer.body);
			}
		}
		EndRequest(cxt);
	}
	PG_CATCH();
	{
		ErrorData  *edata = AbortRequest(cxt);

		ereport(LOG, (errmsg("interop gateway: catalog failed: %s", edata->message)));
		PlainAnswer(&x->answer, 500, "internal_error", "the catalog could not be built");
	}
	PG_END_TRY();
}

/*
 * RefuseUnread - a signed refusal bound to the request bytes (req),
 * without reading the request further and without a log record of its
 * own.  Unsigned if even signing fails.
 */
static void
RefuseUnread(struct evhttp_request *hreq, Exchange *x, MemoryContext cxt, int status, const char *code,
			 const char *message)
{
	PG_TRY();
	{
		RequestBody(hreq, x);
		BeginRequest(cxt);
		SignedAnswer(&x->answer, cxt, status,
					 BuildError(NULL, NULL, x->len > 0 ? Sha256Base64Url(x->body, x->len) : NULL, code, message));
		EndRequest(cxt);
	}
	PG_CATCH();
	{
		(void) AbortRequest(cxt);
		PlainAnswer(&x->answer, status, code, message);
	}
	PG_END_TRY();
}

/*
 * HandleOverload - 429 to a connection beyond interop.gateway_max_connections:
 * signed and bound to the request bytes (req), so the consumer can tell it
 * from a forgery and retry; the request itself is not read further.
 */
static void
HandleOverload(struct evhttp_request *hreq, Exchange *x, MemoryContext cxt)
{
	RefuseUnread(hreq, x, cxt, 429, "overloaded",
				 psprintf("this gateway worker has %d connections open; interop.gateway_max_connections is %d; retry later",
						  open_connections, interop_gateway_max_connections));
}

/*
 * HandleNotDurable - 503 to a query or a page of changes while
 * interop.require_synchronous_log is on and no synchronous standby would
 * confirm its log record (SynchronousLogProblem): signed and bound to the
 * request bytes like HandleOverload's 429, not logged (the record could
 * not be made durable either), and not run.  The consumer retries.
 */
static void
HandleNotDurable(struct evhttp_request *hreq, Exchange *x, MemoryContext cxt, const char *problem)
{
	x->log.error_code = "not_durable";
	RefuseUnread(hreq, x, cxt, 503, "not_durable", psprintf("%s; retry later", problem));
}

/*
 * HandleNotTimestamped - 503 to a query or a page of changes while the
 * seals have waited longer than interop.max_timestamp_gap for a timestamp
 * (TimestampGapProblem): an exchange the node could not prove later is not
 * made.  Signed and bound to the request like HandleNotDurable's; the
 * consumer retries.
 */
static void
HandleNotTimestamped(struct evhttp_request *hreq, Exchange *x, MemoryContext cxt, const char *problem)
{
	x->log.error_code = "not_timestamped";
	RefuseUnread(hreq, x, cxt, 503, "not_timestamped", psprintf("%s; retry later", problem));
}

/* how long a failed write to the log keeps the node not ready */
#define LOG_FAILURE_HOLD_S 30

/*
 * HandleHealth - GET /v1/health: readiness, for a load balancer.  200 and
 * "ok" only when this node can answer correctly now: it has an identity
 * with a certificate valid at this moment, the last write to the message
 * log did not fail (within LOG_FAILURE_HOLD_S), a log record would be
 * durable on a synchronous standby where interop.require_synchronous_log
 * asks for it, the seals have not waited longer than
 * interop.max_timestamp_gap for a timestamp, and the gateway is not
 * shutting down; else 503 and
 * "not_ready", with the checks that failed.  (A standby runs no gateway:
 * the probe finds nothing listening there, so a load balancer that probes
 * every node sends traffic to the primary only.)
 */
static void
HandleHealth(struct evhttp_request *hreq, Exchange *x, MemoryContext cxt)
{
	StringInfoData buf;
	char	   *volatile member = NULL;
	char	   *volatile certificate = NULL;
	char		why[256];
	bool		ready;
	bool		log_failing;
	char	   *not_durable;
	char	   *not_timestamped;

	PG_TRY();
	{
		NodeState  *st;

		BeginRequest(cxt);
		st = GetNodeState();
		member = MemoryContextStrdup(cxt, st->member_id);
		if (st->chain == NULL || sk_X509_num(st->chain) == 0)
			certificate = MemoryContextStrdup(cxt, "no certificate installed");
		else
		{
			X509	   *leaf = sk_X509_value(st->chain, 0);

			if (X509_cmp_current_time(X509_get0_notAfter(leaf)) <= 0)
				certificate = MemoryContextStrdup(cxt, "the node's certificate has expired");
			else if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0)
				certificate = MemoryContextStrdup(cxt, "the node's certificate is not valid yet");
		}
		EndRequest(cxt);
	}
	PG_CATCH();
	{
		(void) AbortRequest(cxt);	/* no identity: the answer says so */
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);

	log_failing = LogWriteFailing(LOG_FAILURE_HOLD_S, why, sizeof(why));
	not_durable = SynchronousLogProblem();
	not_timestamped = TimestampGapProblem();
	ready = member != NULL && certificate == NULL && !log_failing && not_durable == NULL &&
		not_timestamped == NULL && !shutdown_requested;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"status\":\"%s\",\"member\":", ready ? "ok" : "not_ready");
	if (member)
		escape_json(&buf, member);
	else
		appendStringInfoString(&buf, "null");
	appendStringInfoString(&buf, ",\"version\":\"" INTEROP_VERSION "\"");
	if (!ready)
	{
		appendStringInfoString(&buf, ",\"problems\":[");
		if (member == NULL)
			appendStringInfoString(&buf, "\"no identity: the node has no key or the extension is not installed\",");
		if (certificate)
		{
			escape_json(&buf, certificate);
			appendStringInfoChar(&buf, ',');
		}
		if (log_failing)
		{
			escape_json(&buf, psprintf("the message log could not be written: %s", why));
			appendStringInfoChar(&buf, ',');
		}
		if (not_durable)
		{
			escape_json(&buf, not_durable);
			appendStringInfoChar(&buf, ',');
		}
		if (not_timestamped)
		{
			escape_json(&buf, not_timestamped);
			appendStringInfoChar(&buf, ',');
		}
		if (shutdown_requested)
			appendStringInfoString(&buf, "\"shutting down\",");
		buf.data[--buf.len] = '\0';	/* the last comma */
		appendStringInfoChar(&buf, ']');
	}
	appendStringInfoChar(&buf, '}');
	x->answer.status = ready ? 200 : 503;
	x->answer.content_type = "application/json";
	x->answer.body = buf.data;
	x->answer.len = buf.len;
}

/* Loopback - whether the client address ("host:port") is a loopback one */
static bool
Loopback(const char *client)
{
	return client != NULL && (strncmp(client, "127.", 4) == 0 || strncmp(client, "::1:", 4) == 0);
}

/*
 * GaugeFromQuery - a gauge of /metrics from a query of one or two columns:
 * (value) or (label value, value); a NULL value writes no sample.
 */
static void
GaugeFromQuery(StringInfo buf, const char *name, const char *label, const char *help, const char *sql)
{
	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the metric %s", name);
	appendStringInfo(buf, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		char	   *value = SPI_getvalue(t, d, d->natts);

		if (value == NULL)
			continue;
		if (label != NULL)
		{
			char	   *l = SPI_getvalue(t, d, 1);
			StringInfoData esc;

			/* label values escape \, " and newline */
			initStringInfo(&esc);
			for (const char *c = l ? l : ""; *c; c++)
			{
				if (*c == '\\' || *c == '"')
					appendStringInfoChar(&esc, '\\');
				if (*c == '\n')
					appendStringInfoString(&esc, "\\n");
				else
					appendStringInfoChar(&esc, *c);
			}
			appendStringInfo(buf, "%s{%s=\"%s\"} %s\n", name, label, esc.data, value);
		}
		else
			appendStringInfo(buf, "%s %s\n", name, value);
	}
}

/*
 * HandleMetrics - GET /metrics: the counters in Prometheus text format,
 * and gauges read from interop's tables.  Served to loopback clients and
 * on the monitoring listener: traffic by service is not for other members
 * to read.
 */
static void
HandleMetrics(struct evhttp_request *hreq, Exchange *x, MemoryContext cxt)
{
	char	   *volatile extra = NULL;

	if (!x->monitor && !Loopback(x->client))
	{
		PlainAnswer(&x->answer, 403, "access_denied",
					"/metrics is served to loopback clients, and on interop.monitor_port");
		return;
	}
	PG_TRY();
	{
		StringInfoData buf;

		BeginRequest(cxt);
		initStringInfo(&buf);
		appendStringInfoString(&buf,
							   "# HELP interop_async_requests Asynchronous queries by state.\n"
							   "# TYPE interop_async_requests gauge\n");
		if (SPI_execute("SELECT s, count(a.id) FROM unnest(ARRAY['pending', 'done', 'failed']) s "
						"LEFT JOIN interop.async_request a ON a.state = s GROUP BY s ORDER BY s", true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read interop.async_request");
		for (uint64 i = 0; i < SPI_processed; i++)
			appendStringInfo(&buf, "interop_async_requests{state=\"%s\"} %s\n",
							 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
							 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2));
		GaugeFromQuery(&buf, "interop_async_oldest_pending_seconds", NULL,
					   "Age of the oldest pending asynchronous query (0: none pending).",
					   "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8 "
					   "FROM interop.async_request WHERE state = 'pending'");
		GaugeFromQuery(&buf, "interop_certificate_expiry_timestamp_seconds", NULL,
					   "When this node's own certificate expires (Unix time).",
					   "SELECT extract(epoch FROM certificate_not_after)::float8 FROM interop.node");
		GaugeFromQuery(&buf, "interop_seal_age_seconds", "log",
					   "Time since the newest seal of each log.",
					   "SELECT l, extract(epoch FROM clock_timestamp() - "
					   "(SELECT max(sealed_at) FROM interop.log_seal s WHERE s.log = l AND s.kind = 'seal'))::float8 "
					   "FROM unnest(ARRAY['consent_log', 'message_log']) l");
		GaugeFromQuery(&buf, "interop_unsealed_records", "log",
					   "Records of each log that no seal covers yet.",
					   "SELECT 'message_log', count(*)::float8 FROM interop.message_log m "
					   "WHERE m.id > coalesce((SELECT max(upto_id) FROM interop.log_seal WHERE log = 'message_log'), 0) "
					   "UNION ALL SELECT 'consent_log', count(*)::float8 FROM interop.consent_log c "
					   "WHERE c.id > coalesce((SELECT max(upto_id) FROM interop.log_seal WHERE log = 'consent_log'), 0)");
		GaugeFromQuery(&buf, "interop_subscription_lag_seconds", "subscription",
					   "Time since each subscription was last known to be in sync (no sample before its first sync).",
					   "SELECT provider::text || '/' || service, "
					   "extract(epoch FROM clock_timestamp() - synced_at)::float8 FROM interop.subscription ORDER BY 1");
		TimestampMetrics(&buf);
		WitnessMetrics(&buf);
		extra = MemoryContextStrdup(cxt, buf.data);
		EndRequest(cxt);
	}
	PG_CATCH();
	{
		ErrorData  *e = AbortRequest(cxt);

		/* the counters still go out; the server log says what is missing */
		ereport(LOG,
				(errmsg("interop gateway: /metrics without the gauges from interop's tables: %s", e->message)));
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	x->answer.status = 200;
	x->answer.content_type = "text/plain; version=0.0.4";
	x->answer.body = MetricsText(extra);
	x->answer.len = strlen(x->answer.body);
}

/*
 * HandleCosign - POST /v1/cosign: another node's newest seals, to be
 * cosigned by this node as its witness (src/witness.c).  The answer is a
 * cosignature or a signed refusal, in the request's transaction with what
 * the witness keeps of it (interop.witnessed_head, interop.witness_alarm);
 * it is not a record of the message log.
 */
static void
HandleCosign(struct evhttp_request *hreq, Exchange *x, MemoryContext cxt)
{
	const char *ctype = evhttp_find_header(evhttp_request_get_input_headers(hreq), "Content-Type");
	volatile bool failed = false;
	ErrorData  *edata = NULL;
	char	   *hash;

	RequestBody(hreq, x);
	hash = Sha256Base64Url(x->body, x->len);
	PG_TRY();
	{
		HeadRequest hr;
		int			status;
		char	   *jws;

		BeginRequest(cxt);
		if (!JoseMediaType(ctype))
			ereport(ERROR,
					(errcode(ERRCODE_INTEROP_INVALID_MESSAGE),
					 errmsg("wrong content type"),
					 errdetail("A request is sent as Content-Type: application/jose, not %s.",
							   ctype ? ctype : "without a content type")));
		memset(&hr, 0, sizeof(hr));
		hr.hash = hash;
		jws = ServeHead(x->body, x->len, x->tls_member, &hr, &status);
		x->answer.status = status;
		x->answer.content_type = "application/jose";
		x->answer.body = MemoryContextStrdup(cxt, jws);
		x->answer.len = strlen(x->answer.body);
		EndRequest(cxt);
	}
	PG_CATCH();
	{
		edata = AbortRequest(cxt);
		failed = true;
	}
	PG_END_TRY();
	if (failed)
	{
		int			status;
		const char *code;
		char	   *message;

		WireErrorFor(edata->sqlerrcode, &status, &code);
		if (status == 500)
		{
			ereport(LOG,
					(errmsg("interop gateway: request to cosign from %s failed: %s", x->client ? x->client : "?",
							edata->message),
					 edata->detail ? errdetail_internal("%s", edata->detail) : 0));
			message = pstrdup("internal error; the witness's server log has the details");
		}
		else
			message = edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message;
		x->log.error_code = code;
		RefuseUnread(hreq, x, cxt, status, code, message);
	}
}

/* the OpenAPI 3 description of the endpoints */
static const char openapi_json[] =
"{\"openapi\":\"3.0.3\","
"\"info\":{\"title\":\"interop node\",\"version\":\"" INTEROP_VERSION "\","
"\"description\":\"Signed data exchange between registries. Requests and responses are JWS (RFC 7515) compact serializations; see docs/protocol.md.\"},"
"\"paths\":{"
"\"/v1/query\":{\"post\":{\"summary\":\"Query a published service\","
"\"requestBody\":{\"required\":true,\"content\":{\"application/jose\":{\"schema\":{\"type\":\"string\",\"description\":\"JWS whose payload has iss, aud, svc, params, purpose, iat, exp, jti\"}}}},"
"\"responses\":{"
"\"200\":{\"description\":\"signed answer: iss, aud, jti, req, iat, columns, rows, truncated\",\"content\":{\"application/jose\":{\"schema\":{\"type\":\"string\"}}}},"
"\"400\":{\"description\":\"malformed request (bad_request)\"},"
"\"401\":{\"description\":\"bad signature, untrusted or revoked certificate, member mismatch, wrong audience, clock skew\"},"
"\"403\":{\"description\":\"access_denied, purpose_not_allowed, consent_required\"},"
"\"404\":{\"description\":\"unknown_service\"},"
"\"409\":{\"description\":\"replayed: the jti was used by another request\"},"
"\"413\":{\"description\":\"too_large\"},"
"\"429\":{\"description\":\"overloaded: retry with a new connection\"},"
"\"500\":{\"description\":\"internal_error or timeout\"},"
"\"503\":{\"description\":\"not_durable (no synchronous standby confirms the log), not_timestamped (the seals have waited too long for a timestamp) or shutting_down: retry\"}}}},"
"\"/v1/changes\":{\"post\":{\"summary\":\"Pull the rows of a service that tracks changes: a copy in pages, then the changes after a cursor\","
"\"requestBody\":{\"required\":true,\"content\":{\"application/jose\":{\"schema\":{\"type\":\"string\",\"description\":\"JWS whose payload has the request claims and since (the cursor from the last answer's next, or null)\"}}}},"
"\"responses\":{"
"\"200\":{\"description\":\"signed batch: iss, aud, jti, req, iat, columns, key, upserts, deletes, next, more\",\"content\":{\"application/jose\":{\"schema\":{\"type\":\"string\"}}}},"
"\"400\":{\"description\":\"malformed request or cursor\"},"
"\"401\":{\"description\":\"as for /v1/query\"},"
"\"403\":{\"description\":\"access_denied, purpose_not_allowed\"},"
"\"404\":{\"description\":\"unknown_service, or a service that does not track changes\"},"
"\"410\":{\"description\":\"cursor_expired: start again with since = null\"},"
"\"500\":{\"description\":\"internal_error or timeout\"},"
"\"503\":{\"description\":\"not_ready, not_durable, not_timestamped or shutting_down: try again later\"}}}},"
"\"/v1/catalog\":{\"get\":{\"summary\":\"The services granted to the TLS client's member id, signed\","
"\"responses\":{\"200\":{\"description\":\"JWS whose payload has iss, aud, iat, services\",\"content\":{\"application/jose\":{\"schema\":{\"type\":\"string\"}}}},"
"\"401\":{\"description\":\"client_certificate_required\"}}}},"
"\"/v1/cosign\":{\"post\":{\"summary\":\"Cosign the TLS client's newest seal, as its witness\","
"\"requestBody\":{\"required\":true,\"content\":{\"application/jose\":{\"schema\":{\"type\":\"string\",\"description\":\"JWS of typ interop-head: iss, aud, iat, exp, jti, from, seals (id, jws), each the prev of the next\"}}}},"
"\"responses\":{"
"\"200\":{\"description\":\"JWS of typ interop-cosignature: iss, aud, jti, req, iat, node, seal, head, extends, cosigned_at\",\"content\":{\"application/jose\":{\"schema\":{\"type\":\"string\"}}}},"
"\"400\":{\"description\":\"malformed request, or seals that are not one chain\"},"
"\"401\":{\"description\":\"as for /v1/query\"},"
"\"409\":{\"description\":\"head_inconsistent (the seals do not extend the head cosigned before: an alarm), witness_gap or stale_head (send the seals from witnessed.seal)\"}}}},"
"\"/v1/health\":{\"get\":{\"summary\":\"Readiness\",\"responses\":{\"200\":{\"description\":\"status, member, version\","
"\"content\":{\"application/json\":{\"schema\":{\"type\":\"object\",\"properties\":{\"status\":{\"type\":\"string\"},\"member\":{\"type\":\"string\"},\"version\":{\"type\":\"string\"}}}}}},\"503\":{\"description\":\"not_ready: problems lists what fails\"}}}},"
"\"/v1/openapi.json\":{\"get\":{\"summary\":\"This document\",\"responses\":{\"200\":{\"description\":\"OpenAPI 3\"}}}},"
"\"/metrics\":{\"get\":{\"summary\":\"Counters in Prometheus text format (loopback clients only)\",\"responses\":{\"200\":{\"description\":\"text/plain; version=0.0.4\"},\"403\":{\"description\":\"not a loopback client\"}}}}"
"}}";

/* HandleChanges - POST /v1/changes: a query for a batch of changes */
static void
HandleChanges(struct evhttp_request *hreq, Exchange *x, MemoryContext cxt)
{
	x->changes = true;
	HandleQuery(hreq, x, cxt);
}

/* HandleOpenApi - GET /v1/openapi.json */
static void
HandleOpenApi(struct evhttp_request *hreq, Exchange *x, MemoryContext cxt)
{
	x->answer.status = 200;
	x->answer.content_type = "application/json";
	x->answer.body = (char *) openapi_json;
	x->answer.len = sizeof(openapi_json) - 1;
}

/* the endpoints: path, methods, the Allow header a wrong method gets, handler */
typedef struct Route
{
	const char *path;
	int			methods;		/* evhttp_cmd_type bits */
	const char *allow;
	void		(*handler) (struct evhttp_request *hreq, Exchange *x, MemoryContext cxt);
	bool		by_service;		/* counted by the request's service, once verified */
	bool		monitor;		/* served on the monitoring listener too */
} Route;

static const Route routes[] = {
	{"/v1/query", EVHTTP_REQ_POST, "POST", HandleQuery, true, false},
	{"/v1/changes", EVHTTP_REQ_POST, "POST", HandleChanges, true, false},
	{"/v1/catalog", EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, "GET, HEAD", HandleCatalog, false, false},
	{"/v1/cosign", EVHTTP_REQ_POST, "POST", HandleCosign, false, false},
	{"/v1/health", EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, "GET, HEAD", HandleHealth, false, true},
	{"/v1/openapi.json", EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, "GET, HEAD", HandleOpenApi, false, false},
	{"/metrics", EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, "GET, HEAD", HandleMetrics, false, true},
};

/*
 * HandleRequest - evhttp's callback for every request: find the route,
 * answer, count.  Paths are compared exactly as sent (docs/protocol.md).
 */
static void
HandleRequest(struct evhttp_request *hreq, void *arg)
{
	bool		monitor = arg != NULL;	/* the monitoring listener: health and metrics */
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "interop request",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
	enum evhttp_cmd_type method = evhttp_request_get_command(hreq);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(hreq);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	const Route *route = NULL;
	char	   *not_durable;
	Exchange   *x = palloc0(sizeof(Exchange));
	XLogRecPtr	last_commit = XactLastCommitEnd;

	x->cxt = cxt;
	x->hreq = hreq;
	x->started = GetCurrentTimestamp();
	x->client = ClientAddress(hreq);
	x->tls_member = ClientMember(hreq);
	in_request = true;
	commit_async = GroupCommitAllowed();
	pgstat_report_activity(STATE_RUNNING, psprintf("%s %s", method == EVHTTP_REQ_POST ? "POST" : "GET",
												   path ? path : "?"));
	for (int i = 0; path != NULL && i < lengthof(routes) && route == NULL; i++)
		if (strcmp(path, routes[i].path) == 0 && (!monitor || routes[i].monitor))
			route = &routes[i];
	x->monitor = monitor;

	if (Overflowing(hreq))
		HandleOverload(hreq, x, cxt);
	else if (path == NULL)
		PlainAnswer(&x->answer, 400, "bad_request", "the request line has no path");
	else if (route == NULL)
		PlainAnswer(&x->answer, 404, "not_found", psprintf("no endpoint %s; see /v1/openapi.json", path));
	else if ((method & route->methods) == 0)
	{
		PlainAnswer(&x->answer, 405, "method_not_allowed", psprintf("%s takes %s", path, route->allow));
		x->answer.allow = route->allow;
	}
	else if (route->by_service && (not_durable = SynchronousLogProblem()) != NULL)
		HandleNotDurable(hreq, x, cxt, not_durable);
	else if (route->by_service && (not_durable = TimestampGapProblem()) != NULL)
		HandleNotTimestamped(hreq, x, cxt, not_durable);
	else
	{
		route->handler(hreq, x, cxt);
		/* committed here, but not confirmed by a synchronous standby: no answer */
		if (route->by_service && !commit_async && !LastCommitDurable())
			HandleNotDurable(hreq, x, cxt,
							 "the exchange's log record was committed on this node, but no synchronous standby confirmed it");
	}

	/* count it: a query by its service once verified, the rest by endpoint */
	x->counted_as = route == NULL ? "(other)" :
		route->by_service ? (x->req.svc ? x->req.svc : "(unverified)") : route->path;
	in_request = false;
	QueryCancelPending = false;
	pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextSwitchTo(oldcxt);

	if (!commit_async)
	{
		SendAnswer(x);
		return;
	}
	/* held until its commit, if it made one, is flushed */
	commit_async = false;
	held[nheld++] = x;
	if (XactLastCommitEnd != last_commit)
		held_flush = Max(held_flush, XactLastCommitEnd);
	if (nheld == GROUP_COMMIT_MAX)
		SendHeld();
	else if (nheld == 1)
		event_active(flush_event, EV_TIMEOUT, 0);
}

/* FlushHeld - the lowest-priority event: no request is ready, flush and send */
static void
FlushHeld(evutil_socket_t fd, short what, void *arg)
{
	SendHeld();
}

/*
 * SendHeld - flush the WAL up to the held answers' last commit, then send
 * them.  A flush that fails (PostgreSQL raises a PANIC for a write error;
 * an ERROR here is a bug) sends a plain 500 instead: the consumer's retry
 * with the same jti gets the logged answer.
 */
static void
SendHeld(void)
{
	volatile bool flushed = false;

	if (nheld == 0)
		return;
	PG_TRY();
	{
		if (held_flush != InvalidXLogRecPtr)
			XLogFlush(held_flush);
		flushed = true;
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
	if (flushed && held_flush != InvalidXLogRecPtr)
		CountGroupCommit(nheld);
	for (int i = 0; i < nheld; i++)
	{
		if (!flushed)
		{
			MemoryContextSwitchTo(held[i]->cxt);
			PlainAnswer(&held[i]->answer, 500, "internal_error", "the provider could not flush its log");
		}
		SendAnswer(held[i]);
	}
	MemoryContextSwitchTo(TopMemoryContext);
	nheld = 0;
	held_flush = InvalidXLogRecPtr;
}

/* SendAnswer - count and send an answer, and free its request */
static void
SendAnswer(Exchange *x)
{
	CountExchange('g', x->counted_as, x->answer.status, (double) (GetCurrentTimestamp() - x->started) / 1000.0,
				  x->answer.status >= 400 ? x->log.error_code : NULL);
	Send(x->hreq, &x->answer);
	MemoryContextDelete(x->cxt);
}

/* ---- the loop ---- */

/* Tick - five times a second: signals, postmaster, configuration changes */
static void
Tick(evutil_socket_t fd, short what, void *arg)
{
	if (shutdown_requested || !PostmasterIsAlive())
	{
		event_base_loopbreak(base);
		return;
	}
	ResetLatch(MyLatch);

	/*
	 * A barrier (DROP TABLESPACE, DROP DATABASE, ALTER SYSTEM's checksum
	 * changes...) waits for every process to absorb it: the event loop never
	 * reaches CHECK_FOR_INTERRUPTS, so absorb it here.
	 */
	if (ProcSignalBarrierPending)
		ProcessProcSignalBarrier();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		tls_generation = interop_identity_generation - 1;	/* rebuild */
	}

	/* take in committed changes of trust and identity; rebuild TLS if needed */
	PG_TRY();
	{
		BeginWorkerTransaction();
		RefreshTlsContext(false);
		EndWorkerTransaction();
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(TopMemoryContext);
}

/*
 * OpenListeners - one SO_REUSEPORT socket per address of addresses (the
 * value of the GUC named guc) on port
 */
static int
OpenListeners(struct evhttp *http, const char *addresses, int port, const char *guc)
{
	char	   *raw = pstrdup(addresses);
	List	   *names;
	ListCell   *lc;
	int			n = 0;

	if (!SplitGUCList(raw, ',', &names))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("invalid %s", guc)));
	foreach(lc, names)
	{
		const char *host = lfirst(lc);
		struct addrinfo hints;
		struct addrinfo *res;
		struct addrinfo *ai;
		char		service[16];
		int			rc;

		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE;
		snprintf(service, sizeof(service), "%d", port);
		rc = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, service, &hints, &res);
		if (rc != 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("could not resolve %s entry \"%s\": %s",
							guc, host, gai_strerror(rc))));
		for (ai = res; ai != NULL && n < GATEWAY_MAX_SOCKETS; ai = ai->ai_next)
		{
			int			fd = socket(ai->ai_family, SOCK_STREAM, 0);
			int			one = 1;

			if (fd < 0)
				continue;
			if (ai->ai_family == AF_INET6)
				setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
			/* TCP_NODELAY is inherited by accepted sockets: no Nagle delay */
			if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
				setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
				bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
				listen(fd, 128) != 0 ||
				evutil_make_socket_nonblocking(fd) != 0)
			{
				int			save_errno = errno;

				close(fd);
				freeaddrinfo(res);
				errno = save_errno;
				ereport(ERROR,
						(errcode_for_socket_access(),
						 errmsg("interop gateway could not listen on %s port %d: %m", host, port),
						 errhint("Is another program using the port? Set the port or %s.", guc)));
			}
			if (evhttp_accept_socket_with_handle(http, fd) == NULL)
			{
				close(fd);
				freeaddrinfo(res);
				ereport(ERROR,
						(errcode(ERRCODE_INTERNAL_ERROR),
						 errmsg("interop gateway could not accept on %s port %d", host, port)));
			}
			n++;
		}
		freeaddrinfo(res);
	}
	return n;
}

/*
 * WaitUntilReady - wait until the extension exists in interop.database and
 * the TLS identity can be built; log what is missing once.
 */
static bool
WaitUntilReady(void)
{
	char	   *volatile last_problem = NULL;

	for (;;)
	{
		volatile bool ready = false;
		char	   *volatile problem = NULL;

		if (shutdown_requested)
			return false;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		PG_TRY();
		{
			if (!ExtensionInstalled())
				problem = psprintf("extension \"interop\" is not installed in database \"%s\"", interop_database);
			else
			{
				BeginWorkerTransaction();
				RefreshTlsContext(true);
				EndWorkerTransaction();
				ready = true;
			}
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(TopMemoryContext);
			edata = CopyErrorData();
			FlushErrorState();
			AbortCurrentTransaction();
			problem = edata->hint ? psprintf("%s (%s)", edata->message, edata->hint) : edata->message;
		}
		PG_END_TRY();
		MemoryContextSwitchTo(TopMemoryContext);
		if (ready)
			return true;
		/* say what is missing whenever it changes */
		if (last_problem == NULL || strcmp(last_problem, problem) != 0)
			ereport(LOG,
					(errmsg("interop gateway is waiting: %s", problem),
					 errdetail("It checks again every 2 seconds.")));
		last_problem = problem;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 2000, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		if (ProcSignalBarrierPending)
			ProcessProcSignalBarrier();
	}
}

/* GatewayMain - entry point of a gateway worker */
void
GatewayMain(Datum arg)
{
	struct evhttp *http;
	struct evhttp *monitor_http = NULL;
	struct event *tick;
	struct timeval tv = {0, 200000};
	int			nsockets;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	WorkerSetSigterm(GatewaySigterm);
	WorkerConnect(InvalidOid, MyBgworkerEntry->bgw_name);

	if (!WaitUntilReady())
		WorkerExit();

	connection_mark = SSL_get_ex_new_index(0, NULL, NULL, NULL, ConnectionFreed);
	base = event_base_new();
	/* three priorities: everything at the default (1), the group flush at 2 */
	if (base != NULL && event_base_priority_init(base, 3) == 0)
	{
		flush_event = event_new(base, -1, 0, FlushHeld, NULL);
		if (flush_event != NULL)
			event_priority_set(flush_event, 2);
	}
	http = flush_event ? evhttp_new(base) : NULL;
	if (http == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("could not create the HTTP server")));
	evhttp_set_max_body_size(http, interop_max_request_size);
	evhttp_set_max_headers_size(http, GATEWAY_MAX_HEADERS_SIZE);
	/*
	 * Idle and slow clients are cut after this; it must outlast a service
	 * query (interop.request_timeout), or the timer would close the
	 * connection before the answer to a long query is written.
	 */
	evhttp_set_timeout(http, interop_request_timeout / 1000 + 10);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
							   EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
							   EVHTTP_REQ_PATCH);
	evhttp_set_default_content_type(http, "application/json");
	if (interop_tls)
		evhttp_set_bevcb(http, NewConnection, NULL);
	evhttp_set_gencb(http, HandleRequest, NULL);

	nsockets = OpenListeners(http, interop_listen_addresses, interop_port, "interop.listen_addresses");
	if (interop_monitor_port > 0)
	{
		/* plain HTTP, no client certificate: readiness and metrics only */
		monitor_http = evhttp_new(base);
		if (monitor_http == NULL)
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("could not create the HTTP server")));
		evhttp_set_max_body_size(monitor_http, 1024);
		evhttp_set_max_headers_size(monitor_http, GATEWAY_MAX_HEADERS_SIZE);
		evhttp_set_timeout(monitor_http, 10);
		evhttp_set_allowed_methods(monitor_http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
		evhttp_set_gencb(monitor_http, HandleRequest, (void *) monitor_http);
		if (OpenListeners(monitor_http, interop_monitor_listen_addresses, interop_monitor_port,
						  "interop.monitor_listen_addresses") > 0)
			ereport(LOG,
					(errmsg("interop gateway %d: monitoring on %s port %d (HTTP: /v1/health, /metrics)",
							DatumGetInt32(arg), interop_monitor_listen_addresses, interop_monitor_port)));
	}
	if (nsockets == 0)
		ereport(LOG, (errmsg("interop gateway listens nowhere: interop.listen_addresses is empty")));
	else
		ereport(LOG,
				(errmsg("interop gateway %d listening on %s port %d%s", DatumGetInt32(arg),
						interop_listen_addresses, interop_port, interop_tls ? " (TLS)" : " (no TLS)")));

	tick = event_new(base, -1, EV_PERSIST, Tick, NULL);
	event_add(tick, &tv);
	pgstat_report_activity(STATE_IDLE, NULL);

	event_base_dispatch(base);

	/* clean exit: the answers held are sent, then stop accepting */
	SendHeld();
	(void) event_base_loop(base, EVLOOP_NONBLOCK);
	event_free(tick);
	event_free(flush_event);
	if (monitor_http)
		evhttp_free(monitor_http);
	evhttp_free(http);
	event_base_free(base);
	if (tls_ctx)
		SSL_CTX_free(tls_ctx);
	ereport(LOG, (errmsg("interop gateway %d stopped", DatumGetInt32(arg))));
	WorkerExit();
}
