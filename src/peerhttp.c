/*-------------------------------------------------------------------------
 *
 * peerhttp.c
 *	  The one libcurl set-up of every outbound call to a peer: interop.query()
 *	  and interop.catalog() in a backend, and every transfer of the sync
 *	  worker (src/transfer.c).  The options, the TLS identity and its check,
 *	  the response buffer, and what a failed transfer means as an SQLSTATE
 *	  and a message.
 *
 * TLS identity (docs/protocol.md, "Transport"): the client presents the
 * node's certificate chain and key, verifies the peer's chain against the
 * trust anchors and CRLs (the same X509_STORE that verifies signatures, set
 * as the context's verify store, which libcurl does not touch; libcurl's
 * own check and its CA bundle are off), and checks that the leaf names the
 * member id it meant to call, not a host name.  That check runs in
 * OpenSSL's verify callback, which must not raise an ERROR through
 * libcurl: it records what it saw in the call's PeerCall (found through
 * the SSL_CTX's ex_data) and the caller turns that into an ERROR or an
 * outcome afterwards.  A connection is reused only for the member id it
 * was verified for (PeerReuseAllowed).
 *
 * The identity handed to the SSL_CTX callback holds references of its own
 * to the store, key and certificates: the callback runs when a connection
 * opens, which can be long after the identity was loaded and after the
 * caches it came from were dropped.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

/* the identity the SSL_CTX callback gives every connection */
typedef struct TlsIdentity
{
	X509_STORE *store;
	X509	   *leaf;
	STACK_OF(X509) *chain;
	EVP_PKEY   *key;
} TlsIdentity;
static TlsIdentity tls_identity;

/* the SSL_CTX ex_data slot of a connection's PeerCall */
static int	call_index = -1;

/* the member id each base URL's open connection was verified for */
typedef struct VerifiedUrl
{
	char		url[512];
	char		member[256];
} VerifiedUrl;
#define VERIFIED_URLS 32
static VerifiedUrl verified_urls[VERIFIED_URLS];

/*
 * Several base URLs per peer (interop.peer.base_url, then more_urls): the
 * nodes of a provider that can be its primary.  Each process remembers,
 * per member, the base URL that answered last and the one that failed
 * last; PeerUrlOrder() puts the first in front and the second at the end.
 * A transfer that got no HTTP answer, or a 503, counts as a failure of its
 * base URL; any other answer as an answer.  Every URL still has to present
 * the member's certificate (PeerVerify), whichever is tried.
 */
typedef struct UrlMemory
{
	char		member[256];
	char		answered[512];
	char		failed[512];
} UrlMemory;
#define URL_MEMORIES 64
static UrlMemory url_memory[URL_MEMORIES];

/* PeerBodyWrite - libcurl write callback: append, within max_response_size */
size_t
PeerBodyWrite(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	PeerBody   *b = userdata;
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

/* PeerBodyReset - an empty body; frees what it held */
void
PeerBodyReset(PeerBody *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/*
 * PeerVerify - OpenSSL verify callback: the trust store's rules, then the
 * leaf must name the member id the call expects
 */
static int
PeerVerify(int ok, X509_STORE_CTX *ctx)
{
	SSL		   *ssl = X509_STORE_CTX_get_ex_data(ctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	PeerCall   *call = ssl ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), call_index) : NULL;

	ok = TrustVerifyCallback(ok, ctx);

	/*
	 * The server's own status unknown here, and it names an OCSP responder:
	 * its stapled answer decides, in PeerStatus once the handshake has it
	 */
	if (!ok && call != NULL && X509_STORE_CTX_get_error_depth(ctx) == 0 &&
		X509_STORE_CTX_get_error(ctx) == X509_V_ERR_UNABLE_TO_GET_CRL)
	{
		char		url[2048];

		if (OcspResponderUrl(X509_STORE_CTX_get_current_cert(ctx), url, sizeof(url)))
		{
			call->staple_needed = true;
			X509_STORE_CTX_set_error(ctx, X509_V_OK);
			ok = 1;
		}
	}
	if (ok && X509_STORE_CTX_get_error_depth(ctx) == 0)
	{
		X509_NAME  *name = X509_get_subject_name(X509_STORE_CTX_get_current_cert(ctx));
		char		cn[256] = "";

		if (call == NULL)
			return 0;
		X509_NAME_get_text_by_NID(name, NID_commonName, cn, sizeof(cn));
		strlcpy(call->presented, cn, sizeof(call->presented));
		if (strcmp(cn, call->expected) != 0)
		{
			call->mismatch = true;
			X509_STORE_CTX_set_error(ctx, X509_V_ERR_APPLICATION_VERIFICATION);
			return 0;
		}
	}
	return ok;
}

/*
 * PeerStatus - OpenSSL's status callback, after the server's certificate
 * was verified: a stapled OCSP answer, checked as a fetched one is, that
 * says revoked refuses the server; one that is fresh and good stands for
 * the status this node did not know (PeerVerify); with neither, a server
 * whose status was unknown is refused.  No palloc, no ERROR: it runs
 * inside libcurl.
 */
static int
PeerStatus(SSL *ssl, void *arg)
{
	PeerCall   *call = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), call_index);
	const unsigned char *der = NULL;
	long		len = SSL_get_tlsext_status_ocsp_resp(ssl, &der);
	STACK_OF(X509) *chain = SSL_get0_verified_chain(ssl);
	char		why[256] = "";

	if (call == NULL)
		return 0;
	if (len > 0 && der != NULL && chain != NULL && sk_X509_num(chain) >= 2)
	{
		OcspVerdict v;

		if (OcspCheckResponse(tls_identity.store, der, len, sk_X509_value(chain, 0), sk_X509_value(chain, 1),
							  &v, why, sizeof(why)))
		{
			if (v.status == V_OCSP_CERTSTATUS_REVOKED)
			{
				call->ocsp_revoked = true;
				snprintf(call->ocsp_problem, sizeof(call->ocsp_problem),
						 "its certificate was revoked, as the OCSP answer it stapled says");
				return 0;
			}
			if (v.status == V_OCSP_CERTSTATUS_GOOD && OcspFresh(&v, time(NULL), NULL))
			{
				OcspRememberStaple(sk_X509_value(chain, 0), &v);
				call->staple_needed = false;
				return 1;
			}
			snprintf(why, sizeof(why), "the answer it stapled is %s",
					 v.status == V_OCSP_CERTSTATUS_GOOD ? "no longer fresh (interop.ocsp_max_age)" : "\"unknown\"");
		}
	}
	if (call->staple_needed)
	{
		snprintf(call->ocsp_problem, sizeof(call->ocsp_problem),
				 "this node has no current revocation list of its certificate's issuer nor a fresh OCSP answer about it, "
				 "and %s", why[0] ? why : "it stapled none");
		return 0;
	}
	return 1;
}

/* PeerSslCtx - libcurl's SSL_CTX callback: our identity, trust and check */
static CURLcode
PeerSslCtx(CURL *curl, void *sslctx, void *parm)
{
	SSL_CTX    *ctx = sslctx;
	TlsIdentity *id = &tls_identity;

	if (id->store == NULL)
		return CURLE_SSL_CERTPROBLEM;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);

	/*
	 * The peer is verified against the verify store, which libcurl never
	 * touches (it loads and swaps the context's cert_store, at a moment that
	 * differs between its versions).  So our trust store is neither filled
	 * with public CAs nor replaced by them.
	 */
	if (SSL_CTX_set1_verify_cert_store(ctx, id->store) != 1 ||
		!SSL_CTX_set_ex_data(ctx, call_index, parm))
		return CURLE_SSL_CERTPROBLEM;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, PeerVerify);
	/* ask for the server's OCSP answer: it may stand for one this node lacks */
	SSL_CTX_set_tlsext_status_type(ctx, TLSEXT_STATUSTYPE_ocsp);
	SSL_CTX_set_tlsext_status_cb(ctx, PeerStatus);
	if (SSL_CTX_use_certificate(ctx, id->leaf) != 1 ||
		SSL_CTX_use_PrivateKey(ctx, id->key) != 1)
		return CURLE_SSL_CERTPROBLEM;
	for (int i = 1; i < sk_X509_num(id->chain); i++)
		if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(id->chain, i)) != 1)
			return CURLE_SSL_CERTPROBLEM;
	return CURLE_OK;
}

/*
 * PeerIdentityLoad - the node's certificate, key and trust store for the
 * connections to open, with references of their own.  Raises an ERROR when
 * the node has no certificate.
 */
void
PeerIdentityLoad(void)
{
	NodeState  *st = GetNodeState();
	X509_STORE *store = LoadTrustStore();

	if (st->chain == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this node has no certificate yet"),
				 errdetail("A node calls peers with its certificate as TLS client certificate."),
				 errhint("Install one with interop.install_certificate().")));
	if (tls_identity.store == store && tls_identity.key == st->key &&
		tls_identity.leaf == sk_X509_value(st->chain, 0))
		return;
	ERR_clear_error();
	if (!X509_STORE_up_ref(store) || !EVP_PKEY_up_ref(st->key) ||
		!X509_up_ref(sk_X509_value(st->chain, 0)))
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not take a reference to the TLS identity", NULL);
	X509_STORE_free(tls_identity.store);
	EVP_PKEY_free(tls_identity.key);
	X509_free(tls_identity.leaf);
	sk_X509_pop_free(tls_identity.chain, X509_free);
	tls_identity.store = store;
	tls_identity.key = st->key;
	tls_identity.leaf = sk_X509_value(st->chain, 0);
	tls_identity.chain = X509_chain_up_ref(st->chain);
	if (tls_identity.chain == NULL)
		OpenSSLError(ERRCODE_OUT_OF_MEMORY, "could not take a reference to the certificate chain", NULL);
}

/*
 * PeerEasySetup - the options every transfer to a peer has: HTTPS only
 * (plain HTTP for a CRL, which is signed), no redirects, the TLS checks
 * described at the top with call as the connection's PeerCall, the body
 * into PeerBodyWrite.
 */
void
PeerEasySetup(CURL *easy, PeerCall *call)
{
	if (call_index < 0)
		call_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);

	/*
	 * The peer is verified by OpenSSL itself, with our trust store and the
	 * verify callback that PeerSslCtx installs (SSL_VERIFY_PEER: a failed
	 * check aborts the handshake).  libcurl's own check stays off and it
	 * gets no CA file: it would only parse the system bundle (20 ms per
	 * connection) for a store that is not used.  The host name is not
	 * checked: the certificate's member id is, instead.
	 */
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
	curl_easy_setopt(easy, CURLOPT_CAINFO, "/dev/null");	/* NULL means the default bundle */
	curl_easy_setopt(easy, CURLOPT_CAPATH, NULL);
	curl_easy_setopt(easy, CURLOPT_SSL_CTX_FUNCTION, PeerSslCtx);
	curl_easy_setopt(easy, CURLOPT_SSL_CTX_DATA, call);
	curl_easy_setopt(easy, CURLOPT_SSL_SESSIONID_CACHE, 0L);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, PeerBodyWrite);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, call->errbuf);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "interop/" INTEROP_VERSION);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
}

/*
 * PeerCallBegin - ready a call to member at url: the check's expectations,
 * the time limits, and whether an open connection may serve it
 */
void
PeerCallBegin(CURL *easy, PeerCall *call, const char *member, const char *url)
{
	strlcpy(call->expected, member, sizeof(call->expected));
	call->presented[0] = '\0';
	call->mismatch = false;
	call->staple_needed = false;
	call->ocsp_revoked = false;
	call->ocsp_problem[0] = '\0';
	call->errbuf[0] = '\0';
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) interop_request_timeout);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(interop_request_timeout, 10000));
	curl_easy_setopt(easy, CURLOPT_FRESH_CONNECT, PeerReuseAllowed(url, member) ? 0L : 1L);
}

/* PeerReuseAllowed - may an open connection to url serve a call to member? */
bool
PeerReuseAllowed(const char *url, const char *member)
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

/* PeerForgetConnections - open connections are gone (handles dropped) */
void
PeerForgetConnections(void)
{
	memset(verified_urls, 0, sizeof(verified_urls));
}

/*
 * PeerFailureOf - what a transfer that did not complete means: the SQLSTATE,
 * message, detail and hint of its ERROR.  The verdict on url's connection
 * is void from now on.
 */
PeerFailure
PeerFailureOf(CURLcode rc, const char *url, const PeerCall *call, bool too_large)
{
	PeerFailure f;
	const char *why = call->errbuf[0] ? call->errbuf : curl_easy_strerror(rc);

	memset(&f, 0, sizeof(f));
	PeerReuseAllowed(url, "");
	f.detail = psprintf("URL %s: %s", url, why);
	if (call->mismatch)
	{
		f.sqlstate = ERRCODE_INTEROP_MEMBER_MISMATCH;
		f.message = psprintf("peer at %s is not %s", url, call->expected);
		f.detail = psprintf("Its TLS certificate names \"%s\".", call->presented);
		f.hint = "Check the base URL of the peer with SELECT * FROM interop.peer.";
	}
	else if (call->ocsp_problem[0] != '\0')
	{
		f.sqlstate = call->ocsp_revoked ? ERRCODE_INTEROP_CERTIFICATE_REVOKED : ERRCODE_INTEROP_REVOCATION_UNKNOWN;
		f.message = call->ocsp_revoked ?
			psprintf("TLS certificate of peer %s has been revoked", call->expected) :
			psprintf("revocation status of the TLS certificate of peer %s is unknown", call->expected);
		f.detail = psprintf("URL %s: %s.", url, call->ocsp_problem);
		f.hint = call->ocsp_revoked ? "The peer needs a new certificate from its CA." :
			"The sync worker asks the OCSP responder named in the certificate and keeps the answers in interop.ocsp_response "
			"(see last_error there); or set interop.revocation_check = best_effort.";
	}
	else if (rc == CURLE_OPERATION_TIMEDOUT)
	{
		f.sqlstate = ERRCODE_CONNECTION_FAILURE;
		f.message = psprintf("peer %s did not answer within interop.request_timeout (%d ms)",
							 call->expected, interop_request_timeout);
	}
	else if (strstr(why, "alert certificate expired") != NULL)
	{
		/* this node's own certificate, not the peer's gateway */
		f.sqlstate = ERRCODE_INTEROP_CERTIFICATE_NOT_VALID;
		f.message = psprintf("peer %s refused this node's TLS certificate: it has expired", call->expected);
		f.hint = "This node's own certificate is out of date: send interop.certificate_request() to the federation CA "
			"and install the new chain with interop.install_certificate(); GET /v1/health says so too.";
	}
	else if (strstr(why, "certificate problem: certificate revoked") != NULL)
	{
		f.sqlstate = ERRCODE_INTEROP_CERTIFICATE_REVOKED;
		f.message = psprintf("TLS certificate of peer %s has been revoked", call->expected);
		f.detail = psprintf("URL %s: %s.  Its CA's revocation list or OCSP responder says so (interop.crl, interop.ocsp_response).",
							url, why);
		f.hint = "The peer needs a new certificate from its CA.";
	}
	else if (strstr(why, "alert certificate revoked") != NULL)
	{
		f.sqlstate = ERRCODE_INTEROP_CERTIFICATE_REVOKED;
		f.message = psprintf("peer %s refused this node's TLS certificate: it is revoked", call->expected);
		f.hint = "This node's own certificate was revoked by its CA: request a new one with interop.certificate_request().";
	}
	else if (strstr(why, "alert unknown ca") != NULL || strstr(why, "alert bad certificate") != NULL)
	{
		f.sqlstate = ERRCODE_INTEROP_UNTRUSTED_CERTIFICATE;
		f.message = psprintf("peer %s refused this node's TLS certificate", call->expected);
		f.hint = "The peer must trust this node's CA, and know its revocation status: a peer that has not yet fetched "
			"the revocation list of this node's CA refuses it until it has (retry shortly); a revoked or expired "
			"certificate needs a new one (interop.certificate_request()).";
	}
	else if (strstr(why, "unable to get certificate CRL") != NULL)
	{
		f.sqlstate = ERRCODE_INTEROP_REVOCATION_UNKNOWN;
		f.message = psprintf("revocation status of the TLS certificate of peer %s is unknown", call->expected);
		f.detail = psprintf("URL %s: %s.  This node has no current revocation list of the certificate's issuer, which publishes one.",
							url, why);
		f.hint = "The sync worker fetches revocation lists from the distribution points it sees; install one now with interop.add_crl(), or set interop.revocation_check = best_effort.";
	}
	else if (too_large)
	{
		f.sqlstate = ERRCODE_PROGRAM_LIMIT_EXCEEDED;
		f.message = psprintf("answer of peer %s is larger than interop.max_response_size (%d bytes)",
							 call->expected, interop_max_response_size);
		f.detail = NULL;
		f.hint = "Filter on more columns, or raise interop.max_response_size.";
	}

	/*
	 * A handshake cut by the peer (its gateway worker died, the node is
	 * restarting) is a lost connection, not a trust problem.
	 */
	else if ((rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CONNECT_ERROR ||
			  rc == CURLE_SSL_CERTPROBLEM) &&
			 !(rc == CURLE_SSL_CONNECT_ERROR &&
			   (strstr(why, "reset by peer") || strstr(why, "SSL_ERROR_SYSCALL") ||
				strstr(why, "unexpected eof"))))
	{
		f.sqlstate = ERRCODE_INTEROP_UNTRUSTED_CERTIFICATE;
		f.message = psprintf("TLS handshake with peer %s failed", call->expected);
		f.hint = "Both nodes must have certificates from a trust anchor of the other; see interop.trust_anchor.";
	}
	else
	{
		f.sqlstate = ERRCODE_CONNECTION_FAILURE;
		f.message = psprintf("could not reach peer %s", call->expected);
		f.hint = "Check that the peer's gateway runs and that interop.peer has its base URL.";
	}
	return f;
}

/* PeerFailureText - a failure as one line, for a stored outcome */
char *
PeerFailureText(const PeerFailure *f)
{
	return f->detail ? psprintf("%s: %s", f->message, f->detail) : pstrdup(f->message);
}

/*
 * JoseMediaType - whether a Content-Type is application/jose, in any case,
 * with or without parameters; not application/jose+json (the JSON
 * serialization) nor any other type that merely starts the same.  The
 * gateway applies it to requests, every client to answers.
 */
bool
JoseMediaType(const char *ctype)
{
	if (ctype == NULL || pg_strncasecmp(ctype, "application/jose", 16) != 0)
		return false;
	ctype += 16;
	while (*ctype == ' ' || *ctype == '\t')
		ctype++;
	return *ctype == '\0' || *ctype == ';';
}

/* ---- one call from a backend ---- */

/*
 * A backend keeps one multi and one easy handle across calls, so its TLS
 * connections to peers are reused (HTTP/1.1 keep-alive).  They are dropped
 * when the trust store or the node identity changes.
 */
static CURLM *multi = NULL;
static CURL *easy = NULL;
static uint64 easy_generation = 0;
static PeerCall backend_call;

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
	PeerForgetConnections();
}

/*
 * PrepareHandles - the backend's handles, set up with the node identity.
 * Raises an ERROR when the node cannot make TLS connections yet.
 */
static void
PrepareHandles(void)
{
	if (easy != NULL && easy_generation != interop_identity_generation)
		ResetHandles();
	PeerIdentityLoad();
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
	PeerEasySetup(easy, &backend_call);
}

/*
 * PeerExchangeOne - one HTTPS request of this backend to member at url: POST
 * with body, or GET when body is NULL.  Waits in slices of 100 ms with
 * CHECK_FOR_INTERRUPTS() between them, so pg_cancel_backend() and
 * statement_timeout stop it (CURLOPT_NOSIGNAL keeps libcurl away from
 * PostgreSQL's SIGALRM).  False, with *failure set, when no HTTP answer
 * arrived; failure->retry says whether another URL of the peer may help.
 */
static bool
PeerExchangeOne(const char *member, const char *url, const char *body, PeerAnswer *res,
				PeerFailure *failure)
{
	PeerBody	got = {0};
	struct curl_slist *volatile headers = NULL;
	volatile bool added = false;
	volatile CURLcode rc = CURLE_OK;

	PrepareHandles();
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
		PeerCallBegin(easy, &backend_call, member, url);
		curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(easy, CURLOPT_WRITEDATA, &got);
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
			*failure = PeerFailureOf(rc, url, &backend_call, got.too_large);
			/* an answer too large was an answer; a wrong member is reported as is */
			failure->retry = !got.too_large && !backend_call.mismatch;
		}
		else
		{
			curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &res->status);
			curl_easy_getinfo(easy, CURLINFO_CONTENT_TYPE, &ctype);
			res->content_type = ctype ? pstrdup(ctype) : NULL;
			res->body = pnstrdup(got.data ? got.data : "", got.len);
			res->len = got.len;
		}
	}
	PG_FINALLY();
	{
		if (added)
			curl_multi_remove_handle(multi, easy);
		curl_easy_setopt(easy, CURLOPT_HTTPHEADER, NULL);
		curl_slist_free_all(headers);
		free(got.data);
	}
	PG_END_TRY();
	return rc == CURLE_OK;
}

/*
 * PeerExchange - a request of this backend to member: path (with its
 * leading "/v1/") at each of urls (PeerBaseUrls) in turn until one gives
 * an HTTP answer other than 503.  The same bytes go to each, so a provider
 * that already ran the request (its log replicated to the node that
 * answers now) answers it from its log.  *res is the last HTTP answer;
 * an ERROR when none came, with the last failure.
 */
void
PeerExchange(const char *member, List *urls, const char *path, const char *body, PeerAnswer *res)
{
	PeerFailure failure = {0};
	bool		answered = false;
	ListCell   *lc;

	foreach(lc, urls)
	{
		char	   *url = psprintf("%s%s", (char *) lfirst(lc), path);
		PeerAnswer	one = {0};

		if (PeerExchangeOne(member, url, body, &one, &failure))
		{
			*res = one;
			answered = true;
			if (one.status != 503)
			{
				PeerUrlAnswered(member, url);
				return;
			}
		}
		else if (!failure.retry)
			break;
		PeerUrlFailed(member, url);
	}
	if (answered)
		return;
	ereport(ERROR,
			(errcode(failure.sqlstate),
			 errmsg("%s", failure.message),
			 failure.detail ? errdetail("%s", failure.detail) : 0,
			 failure.hint ? errhint("%s", failure.hint) : 0));
}

/* PeerAnswerSigned - raise the ERROR for an answer that is not a JWS */
void
PeerAnswerSigned(const char *member, const PeerAnswer *r)
{
	char	   *excerpt;

	if (JoseMediaType(r->content_type))
		return;
	excerpt = pnstrdup(r->body, Min(r->len, 200));
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

/* BaseOf - the base URL of a request URL: what precedes its "/v1/" */
static char *
BaseOf(const char *url)
{
	const char *v1 = NULL;

	for (const char *p = strstr(url, "/v1/"); p != NULL; p = strstr(p + 1, "/v1/"))
		v1 = p;
	return v1 ? pnstrdup(url, v1 - url) : pstrdup(url);
}

/* Memory - what this process remembers of member's URLs (create: make it) */
static UrlMemory *
Memory(const char *member, bool create)
{
	UrlMemory  *free_slot = NULL;

	for (int i = 0; i < URL_MEMORIES; i++)
	{
		if (url_memory[i].member[0] == '\0')
		{
			if (free_slot == NULL)
				free_slot = &url_memory[i];
		}
		else if (strcmp(url_memory[i].member, member) == 0)
			return &url_memory[i];
	}
	if (!create)
		return NULL;
	if (free_slot == NULL)
		free_slot = &url_memory[random() % URL_MEMORIES];
	memset(free_slot, 0, sizeof(*free_slot));
	strlcpy(free_slot->member, member, sizeof(free_slot->member));
	return free_slot;
}

/* PeerUrlAnswered - a request to member at url (a base URL and its path) was answered */
void
PeerUrlAnswered(const char *member, const char *url)
{
	UrlMemory  *m = Memory(member, true);

	strlcpy(m->answered, BaseOf(url), sizeof(m->answered));
	if (strcmp(m->failed, m->answered) == 0)
		m->failed[0] = '\0';
}

/* PeerUrlFailed - a request to member at url got no answer, or a 503 */
void
PeerUrlFailed(const char *member, const char *url)
{
	UrlMemory  *m = Memory(member, true);

	strlcpy(m->failed, BaseOf(url), sizeof(m->failed));
	if (strcmp(m->failed, m->answered) == 0)
		m->answered[0] = '\0';
}

/*
 * PeerUrlOrder - base_url and more_urls (a text[] datum, or NULL) of
 * member, in the order to try them: the one that answered last first, the
 * one that failed last at the end, the others as configured
 */
List *
PeerUrlOrder(const char *member, const char *base_url, Datum more_urls, bool more_isnull)
{
	List	   *urls = list_make1(pstrdup(base_url));
	UrlMemory  *m = Memory(member, false);
	List	   *ordered = NIL;
	char	   *failed = NULL;
	ListCell   *lc;

	if (!more_isnull)
	{
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		deconstruct_array(DatumGetArrayTypeP(more_urls), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &nulls, &n);
		for (int i = 0; i < n; i++)
			if (!nulls[i])
				urls = lappend(urls, TextDatumGetCString(elems[i]));
	}
	if (m == NULL || list_length(urls) == 1)
		return urls;
	foreach(lc, urls)
	{
		char	   *u = lfirst(lc);

		if (strcmp(u, m->answered) == 0)
			ordered = lcons(u, ordered);
		else if (strcmp(u, m->failed) == 0)
			failed = u;
		else
			ordered = lappend(ordered, u);
	}
	return failed ? lappend(ordered, failed) : ordered;
}

/*
 * PeerFirstUrl - for a sync worker's transfer: path at the first of
 * member's base URLs (PeerUrlOrder), from columns base_col and more_col
 * of a row of interop.peer; NULL when base_col is NULL (no such peer).
 * The next attempt of a transfer that failed goes to the next URL.
 */
char *
PeerFirstUrl(const char *member, HeapTuple tup, TupleDesc desc, int base_col, int more_col, const char *path)
{
	char	   *base = SPI_getvalue(tup, desc, base_col);
	bool		isnull;
	Datum		more;

	if (base == NULL)
		return NULL;
	more = SPI_getbinval(tup, desc, more_col, &isnull);
	return psprintf("%s%s", (char *) linitial(PeerUrlOrder(member, base, more, isnull)), path);
}

/*
 * The rows of interop.peer this process has read, by member id: a call
 * looked its peer up with a statement each time, a tenth of the consumer's
 * SQL per exchange.  interop.peer's statement trigger queues a relcache
 * invalidation when a row changes; every backend receives it at its next
 * transaction start (or next lock) and InteropRelcacheCallback() marks the
 * cache stale.  A row read while an invalidation arrived, or under a
 * transaction snapshot (which may be older than a change already
 * announced), is used but not kept.
 */
typedef struct PeerRow
{
	char		member[NAMEDATALEN * 2];	/* hash key */
	char	   *base_url;
	Datum		more_urls;		/* text[], or 0 when NULL */
} PeerRow;

static HTAB *peer_rows = NULL;
static MemoryContext peer_rows_cxt = NULL;
static Oid	peer_relid = InvalidOid;
static uint64 peer_generation = 0;
static bool peer_rows_stale = false;

/* PeerRelationChanged - is relid interop.peer (or unknown)? */
bool
PeerRelationChanged(Oid relid)
{
	return relid == InvalidOid || relid == peer_relid;
}

/* InvalidatePeerCache - forget the rows read; freed at the next look-up, not here */
void
InvalidatePeerCache(void)
{
	peer_generation++;
	peer_rows_stale = true;
}

/*
 * PeerBaseUrls - the base URLs of a known peer in the order to try them
 * (PeerUrlOrder), allocated in cxt; or an ERROR.  Connected to SPI.
 */
List *
PeerBaseUrls(const char *member, MemoryContext cxt)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	int			ret;
	bool		isnull;
	bool		found;
	Datum		more;
	MemoryContext old;
	List	   *urls;
	char	   *base;
	uint64		generation;
	PeerRow    *row;

	bool		cacheable = strlen(member) < sizeof(((PeerRow *) NULL)->member);

	if (peer_rows_stale && peer_rows_cxt != NULL)
	{
		MemoryContextReset(peer_rows_cxt);
		peer_rows = NULL;
	}
	peer_rows_stale = false;
	if (peer_rows != NULL && cacheable)
	{
		row = hash_search(peer_rows, member, HASH_FIND, NULL);
		if (row != NULL)
		{
			old = MemoryContextSwitchTo(cxt);
			urls = PeerUrlOrder(member, row->base_url, row->more_urls, row->more_urls == (Datum) 0);
			MemoryContextSwitchTo(old);
			return urls;
		}
	}

	generation = peer_generation;
	/* looked up at each read: a dropped and re-created extension has a new one */
	peer_relid = get_relname_relid("peer", get_namespace_oid("interop", false));
	values[0] = CStringGetTextDatum(member);
	ret = ExecuteCached("SELECT base_url, more_urls FROM interop.peer WHERE member_id = $1::interop.member_id",
						1, argtypes, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.peer: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("peer \"%s\" is not known", member),
				 errhint("Add it with SELECT interop.add_peer('%s', 'https://host:port');", member)));
	base = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	more = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	old = MemoryContextSwitchTo(cxt);
	urls = PeerUrlOrder(member, base, more, isnull);
	MemoryContextSwitchTo(old);

	if (cacheable && generation == peer_generation && !peer_rows_stale && !IsolationUsesXactSnapshot())
	{
		if (peer_rows == NULL)
		{
			HASHCTL		ctl;

			if (peer_rows_cxt == NULL)
				peer_rows_cxt = AllocSetContextCreate(TopMemoryContext, "interop peer rows",
													  ALLOCSET_SMALL_SIZES);
			memset(&ctl, 0, sizeof(ctl));
			ctl.keysize = sizeof(((PeerRow *) NULL)->member);
			ctl.entrysize = sizeof(PeerRow);
			ctl.hcxt = peer_rows_cxt;
			peer_rows = hash_create("interop peer rows", 16, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		}
		row = hash_search(peer_rows, member, HASH_ENTER, &found);
		row->base_url = MemoryContextStrdup(peer_rows_cxt, base);
		old = MemoryContextSwitchTo(peer_rows_cxt);
		row->more_urls = isnull ? (Datum) 0 : PointerGetDatum(DatumGetArrayTypePCopy(more));
		MemoryContextSwitchTo(old);
	}
	return urls;
}

/* PeerRefusal - the ERROR for a signed refusal of a peer */
void
PeerRefusal(const char *member, const char *service, long status, const char *code, const char *message)
{
	ereport(ERROR,
			(errcode(ERRCODE_INTEROP_PEER_STATUS(status >= 400 && status <= 599 ? status : 500)),
			 errmsg("peer %s refused the request for service \"%s\": %s", member, service, code),
			 errdetail("HTTP %ld, error \"%s\": %s", status, code, message),
			 strcmp(code, "access_denied") == 0 || strcmp(code, "purpose_not_allowed") == 0 ?
			 errhint("The provider grants access with interop.grant_access().") : 0));
}
