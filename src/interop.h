/*-------------------------------------------------------------------------
 *
 * interop.h
 *	  Shared declarations of the interop extension, grouped by the file
 *	  that defines them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef INTEROP_H
#define INTEROP_H

#include "postgres.h"

#include "fmgr.h"
#include "compat.h"
#include "utils/elog.h"
#include "utils/jsonb.h"
#include "utils/tuplestore.h"
#include "storage/latch.h"
#include "utils/timestamp.h"

#include <curl/curl.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/*
 * SQLSTATEs of our own, in the implementation-defined class "IX" (SQL
 * standard: classes starting with I-Z are left to implementations).  They
 * let applications catch exactly the trust failure they care about.
 * docs/sql-reference.md lists them.
 */
#define ERRCODE_INTEROP_INVALID_SIGNATURE		MAKE_SQLSTATE('I','X','0','0','1')
#define ERRCODE_INTEROP_UNTRUSTED_CERTIFICATE	MAKE_SQLSTATE('I','X','0','0','2')
#define ERRCODE_INTEROP_CERTIFICATE_NOT_VALID	MAKE_SQLSTATE('I','X','0','0','3')
#define ERRCODE_INTEROP_CERTIFICATE_REVOKED		MAKE_SQLSTATE('I','X','0','0','4')
#define ERRCODE_INTEROP_ALGORITHM_REFUSED		MAKE_SQLSTATE('I','X','0','0','5')
#define ERRCODE_INTEROP_MEMBER_MISMATCH			MAKE_SQLSTATE('I','X','0','0','6')
#define ERRCODE_INTEROP_KEY_MISMATCH			MAKE_SQLSTATE('I','X','0','0','7')
#define ERRCODE_INTEROP_WRONG_AUDIENCE			MAKE_SQLSTATE('I','X','0','0','8')
#define ERRCODE_INTEROP_INVALID_MESSAGE			MAKE_SQLSTATE('I','X','0','0','9')
#define ERRCODE_INTEROP_CLOCK_SKEW				MAKE_SQLSTATE('I','X','0','1','0')
#define ERRCODE_INTEROP_INVALID_RESPONSE		MAKE_SQLSTATE('I','X','0','1','1')
#define ERRCODE_INTEROP_REVOCATION_UNKNOWN		MAKE_SQLSTATE('I','X','0','1','2')

/*
 * A provider refused a request with a signed error: the SQLSTATE is "IX"
 * followed by the HTTP status (IX400, IX401, IX403, IX404, IX409, IX413,
 * IX429, IX500), the wire error code is in the detail.
 */
#define ERRCODE_INTEROP_PEER_STATUS(s) \
	MAKE_SQLSTATE('I','X','0' + (s) / 100 % 10,'0' + (s) / 10 % 10,'0' + (s) % 10)

/* the JWS algorithms interop signs and verifies */
typedef enum JwsAlg
{
	JWS_ALG_INVALID = 0,
	JWS_ALG_ES256,
	JWS_ALG_EDDSA,
	JWS_ALG_PS256,
	JWS_ALG_RS256
} JwsAlg;

/*
 * What a JWS is, by its protected header's "typ" (jws.c).  Every message of
 * the protocol has a typ of its own that interop.sign() never writes, so a
 * payload a user had signed cannot pass for a request, an answer, a
 * catalog or a seal, and an answer cannot pass for a request.
 */
typedef enum JwsTyp
{
	JWS_TYP_ANY = -1,			/* verify(): any typ */
	JWS_TYP_USER = 0,			/* interop.sign(): "JOSE" */
	JWS_TYP_REQUEST,			/* POST /v1/query and /v1/changes */
	JWS_TYP_RESPONSE,			/* their answers and refusals */
	JWS_TYP_CATALOG,			/* GET /v1/catalog */
	JWS_TYP_SEAL,				/* interop.log_seal */
	JWS_TYP_HEAD,				/* POST /v1/cosign: a node's newest seals */
	JWS_TYP_COSIGNATURE,		/* a witness's answer to it */
	JWS_TYP_COUNT
} JwsTyp;

/* the node's identity, loaded once per backend (keys.c) */
typedef struct NodeState
{
	char		member_id[256];
	JwsAlg		alg;
	EVP_PKEY   *key;
	STACK_OF(X509) *chain;		/* NULL until a certificate is installed */
	char	   *header_b64[JWS_TYP_COUNT];	/* protected header per typ, built on use */
} NodeState;

/* a request after CheckRequest(): every claim verified (protocol.c) */
typedef struct ExchangeRequest
{
	char	   *iss;			/* consumer member id, canonical: the signer; NULL
								 * until the claim is checked against it */
	const char *signer;			/* the member id of the verified signature */
	char	   *aud;			/* this node */
	char	   *svc;
	Jsonb	   *params;			/* a JSON object */
	char	   *purpose;		/* NULL when absent */
	int64		iat;
	int64		exp;
	char	   *jti;			/* canonical lower-case UUID */
	char	   *hash;			/* base64url SHA-256 of the request bytes */
	Jsonb	   *since;			/* POST /v1/changes: the cursor object, or NULL */
} ExchangeRequest;

/* a published service, as stored in interop.service */
typedef struct Service
{
	char	   *name;
	Oid			source;
	int			nfilters;
	char	  **filters;
	char	   *subject_column;
	bool		requires_consent;
	int			max_rows;
	Oid			owner;
	bool		track_changes;
} Service;

/* a request to a service, after the message itself was verified (publish.c) */
typedef struct ServiceRequest
{
	const char *service;
	const char *consumer;		/* canonical member id */
	Jsonb	   *params;
	const char *purpose;		/* may be NULL */
} ServiceRequest;

/* the answer: column names and types, rows as JSON arrays (publish.c) */
typedef struct ServiceAnswer
{
	int			ncolumns;
	char	  **column_names;
	char	  **column_types;
	int			nrows;
	char	  **rows;			/* each a JSON array, as text */
	bool		truncated;
	char	   *legal_basis;	/* from the grant, for the log */
	char	   *subject;		/* the subject column's filter value, for the log */
	int64		consent_id;		/* the consent relied on, or 0 */
} ServiceAnswer;

/* why a request is refused; http_status 0 means not refused (publish.c) */
typedef struct ServiceRefusal
{
	int			http_status;
	const char *code;
	char	   *message;
} ServiceRefusal;

/* one record of interop.message_log (msglog.c) */
typedef struct ExchangeLog
{
	const char *direction;		/* "in" (served) or "out" (called) */
	const char *peer;
	const char *service;
	const char *purpose;
	const char *legal_basis;
	const char *subject;
	const char *jti;
	const char *request_hash;
	const char *request;
	const char *response;
	int			status;
	const char *error_code;
	const char *error_message;
	int			row_count;		/* -1: none */
	double		duration_ms;
	const char *client;
	int64		replay_of;		/* 0: none */
	TimestampTz at;				/* 0: now */
	int64		consent_id;		/* 0: none */
} ExchangeLog;

/* the first answer logged for a request (msglog.c) */
typedef struct LoggedAnswer
{
	int64		id;
	char	   *request_hash;
	int			status;
	char	   *response;
} LoggedAnswer;

/* in interop.c */
extern char *interop_key_file;
extern char *interop_database;
extern char *interop_listen_addresses;
extern int	interop_port;
extern char *interop_monitor_listen_addresses;
extern int	interop_monitor_port;
extern int	interop_gateway_workers;
extern bool interop_tls;
extern char *interop_tls_cert_file;
extern char *interop_tls_key_file;
extern bool interop_require_client_cert;
extern int	interop_request_timeout;
extern int	interop_max_clock_skew;
extern int	interop_max_request_size;
extern int	interop_max_response_size;
extern bool interop_log_bodies;
extern bool interop_accept_untyped_messages;
extern int	interop_gateway_max_connections;
extern int	interop_min_log_retention;
extern int	interop_min_certificate_lifetime;
extern uint64 interop_identity_generation;
extern int	ExecuteCached(const char *sql, int nargs, Oid *argtypes, Datum *values,
						  const char *nulls, bool read_only, long count);
extern int	ExecuteCachedPlan(const char *sql, int nargs, Oid *argtypes, Datum *values,
							  const char *nulls, bool read_only, long count, int cursor_options);
extern void RetireAtTransactionEnd(void (*free_fn) (void *), void *ptr);
extern void _PG_init(void);

/* in ha.c */
extern bool interop_require_synchronous_log;
extern void RefuseOnStandby(const char *what);
extern char *SynchronousLogProblem(void);
extern void RequireSynchronousLog(const char *what);
extern void SynchronousCommitForLog(void);
extern bool LastCommitDurable(void);

/* in token.c */
extern char *interop_pkcs11_module;
extern char *interop_pkcs11_pin_file;
extern bool KeyInToken(void);
extern EVP_PKEY *TokenKey(void);

/* in worker.c */
typedef struct RoleSwitch
{
	Oid			userid;
	int			sec_context;
} RoleSwitch;
extern void RegisterInteropWorker(const char *function, const char *name, const char *type, Datum arg);
extern Size WorkerShmemSize(void);
extern void WorkerShmemInit(void);
extern void WorkerSetSigterm(pqsigfunc handler);
extern void WorkerExit(void) pg_attribute_noreturn();
extern void WorkerConnect(Oid dboid, const char *appname);
extern bool ExtensionInstalled(void);
extern void BeginWorkerTransaction(void);
extern void EndWorkerTransaction(void);
extern void BecomeRole(Oid role, RoleSwitch *save);
extern void RestoreRole(const RoleSwitch *save);

/* in crypto.c */
#define SHA256_LEN 32
extern void OpenSSLError(int sqlstate, const char *msg, const char *hint) pg_attribute_noreturn();
extern char *OpenSSLErrorText(void);
extern void OwnEVPKey(EVP_PKEY *pkey);
extern void OwnX509(X509 *cert);
extern void OwnX509Stack(STACK_OF(X509) *certs);
extern BIO *NewMemBio(void);
extern char *MemBioText(BIO *bio);
extern char *Base64UrlEncode(const unsigned char *data, size_t len);
extern PGDLLIMPORT const int8 base64url_value[256];

/* Base64UrlValue - the value of a base64url character, or -1 */
static inline int
Base64UrlValue(unsigned char c)
{
	return base64url_value[c];
}
extern unsigned char *Base64UrlDecode(const char *data, size_t len, size_t *outlen);
extern char *Base64Encode(const unsigned char *data, size_t len);
extern unsigned char *Base64Decode(const char *data, size_t len, size_t *outlen);
extern void Sha256(const void *data, size_t len, unsigned char *out);
extern char *Sha256Base64Url(const void *data, size_t len);
extern EVP_MD_CTX *NewSha256(void);

/* in member_id.c */
extern bool MemberIdParse(const char *str, char **canonical, char **problem);

/* in jws.c */
extern JwsAlg JwsAlgFromName(const char *name);
extern const char *JwsAlgName(JwsAlg alg);
extern void JwsAlgCheckKey(JwsAlg alg, EVP_PKEY *pkey);
extern const char *JwsTypName(JwsTyp typ);
extern char *JwsSignJson(const char *json, size_t len, JwsTyp typ);
extern char *JwsHeaderTyp(const char *jws);
extern X509 *JwsX5cLeaf(const char *jws);
extern EVP_PKEY *PublicKeyFromPEM(const char *pem);
extern char *JwsVerifyCompact(const char *s, size_t len, EVP_PKEY *pubkey, JwsTyp typ,
							  const char **signer, size_t *payload_len);

/* in keys.c */
extern NodeState *GetNodeState(void);
extern bool NodeRelationChanged(Oid relid);
extern void InvalidateNodeCache(void);

/* in x509.c */
#define REVOCATION_REQUIRE 0
#define REVOCATION_BEST_EFFORT 1
extern int	interop_revocation_check;
extern int	RecordSeenCertificates(void);
extern bool RecordCrlSource(const char *url);
extern bool InstallCrl(X509_CRL *crl);
extern List *CrlDistributionPoints(const char *pem, List *urls);
extern char *CertificatePEM(X509 *cert);
extern STACK_OF(X509) *ParseCertificatesPEM(const char *pem, const char *what);
extern char *CertificateMemberId(X509 *cert);
extern EVP_PKEY *VerifyChain(STACK_OF(X509) *chain, const char **member_id);
extern void VerifyChainKnownRevocation(STACK_OF(X509) *chain, time_t *not_before, time_t *not_after);
extern EVP_PKEY *VerifyChainWindow(STACK_OF(X509) *chain, time_t *not_before, time_t *not_after);
extern EVP_PKEY *TrustedSignerKey(const char **x5c, const size_t *lens, int n,
								  const char **member_id, unsigned char *digest);
extern EVP_PKEY *CachedSignerKey(const unsigned char *digest, const char **member_id);
extern X509_STORE *LoadTrustStore(void);
extern int	TrustVerifyCallback(int ok, X509_STORE_CTX *ctx);
extern bool TrustRelationsChanged(Oid relid);
extern void InvalidateTrustCache(void);
extern char *CertificateFingerprint(X509 *cert);
extern char *CertificateSubject(X509 *cert);
extern void RecordChainForOcsp(STACK_OF(X509) *chain);

/* in ocsp.c */
typedef struct OcspVerdict
{
	int			status;			/* V_OCSP_CERTSTATUS_GOOD, _REVOKED or _UNKNOWN */
	time_t		revoked_at;
	time_t		this_update;
	time_t		next_update;	/* 0: the answer names none */
} OcspVerdict;
extern int	interop_ocsp_max_age;
extern bool OcspResponderUrl(X509 *cert, char *url, size_t size);
extern bool OcspResponderOnly(X509 *cert);
extern bool OcspFresh(const OcspVerdict *v, time_t now, time_t *until);
extern bool OcspCheckResponse(X509_STORE *store, const unsigned char *der, long len, X509 *cert,
							  X509 *issuer, OcspVerdict *v, char *why, size_t size);
extern const OcspVerdict *OcspFind(X509_STORE *store, X509 *cert);
extern bool OcspStaple(X509_STORE *store, X509 *cert, unsigned char **der, int *len);
extern void OcspLoadInto(X509_STORE *store);
extern void OcspRememberStaple(X509 *cert, const OcspVerdict *v);
extern void OcspForgetStaples(void);
extern bool RecordOcspSubject(X509 *cert, X509 *issuer, const char *url);

/* in protocol.c */
#define MAX_CURSOR_SIZE 8192	/* bytes of a provider's cursor a consumer keeps */

/* the claims of a checked batch of changes */
typedef struct Batch
{
	int			nupserts;
	int			ndeletes;
	char	   *next;			/* the provider's cursor, as JSON text: opaque */
	bool		next_copy;		/* the next pull is a page of the copy */
	bool		more;			/* pull again at once */
	bool		complete;		/* every change the provider had committed is in */
} Batch;
extern char *NewJti(void);
extern char *BuildRequest(const char *provider, const char *service, const char *params_json,
						  const char *purpose, const char *jti, int64 lifetime,
						  const char *since_json);
extern void CheckRequest(const char *body, size_t len, const char *tls_member,
						 ExchangeRequest *req);
extern char *BuildAnswer(const ExchangeRequest *req, const char *subject, const char *answer_json);
extern char *BuildError(const char *aud, const char *jti, const char *req_hash,
						const char *code, const char *message);
extern Jsonb *CheckResponse(const char *body, size_t len, const char *provider,
							const char *jti, const char *req_hash,
							char **error_code, char **error_message);
extern JsonbValue *ResponseClaim(Jsonb *jb, const char *key);
extern int	AnswerRowsToTuplestore(Jsonb *payload, Tuplestorestate *ts, TupleDesc desc);
extern Jsonb *CheckCatalog(const char *body, size_t len, const char *provider);
extern void CheckBatch(Jsonb *payload, const char *provider, Batch *b);
extern void WireErrorFor(int sqlstate, int *status, const char **code);

/* the newest seals of a node, as POST /v1/cosign carries them (protocol.c) */
#define MAX_HEAD_SEALS 100
typedef struct HeadSeal
{
	int64		id;
	char	   *jws;
	char	   *hash;			/* b64url SHA-256 of jws */
	char	   *prev;			/* its "prev": the hash of the seal before it, or NULL */
} HeadSeal;
typedef struct HeadRequest
{
	char	   *iss;			/* the node whose seals these are: the signer */
	const char *signer;
	char	   *jti;
	char	   *hash;			/* of the request bytes */
	bool		has_from;
	int64		from;			/* the seal the chain starts at, as the node was told */
	int			nseals;
	HeadSeal   *seals;			/* in id order, each the "prev" of the next; the last is the head */
} HeadRequest;
extern char *BuildHeadRequest(const char *witness, const char *jti, bool has_from, int64 from,
							  const HeadSeal *seals, int nseals);
extern void CheckHeadRequest(const char *body, size_t len, const char *tls_member, HeadRequest *hr);
extern char *BuildCosignature(const HeadRequest *hr, const char *cosigned_at, bool has_extends, int64 extends);
extern char *BuildWitnessError(const HeadRequest *hr, const char *code, const char *message,
							   bool has_witnessed, int64 witnessed_seal, const char *witnessed_head);
extern Jsonb *CheckCosignature(const char *body, size_t len, const char *witness, const char *jti,
							   const char *req_hash, int64 seal_id, const char *head);
extern int64 Int64Claim(Jsonb *jb, const char *key, bool *present, const char *what);

/* in publish.c */
extern bool ServeRequest(const ServiceRequest *req, ServiceAnswer *ans, ServiceRefusal *refusal);
extern char *AnswerJson(const ServiceAnswer *ans);
extern bool Refuse(ServiceRefusal *r, int status, const char *code, const char *fmt,...) pg_attribute_printf(4, 5);
extern bool LoadService(const char *name, Service *svc, ServiceRefusal *refusal);
extern bool AuthorizeConsumer(const Service *svc, const ServiceRequest *req, ServiceAnswer *ans,
							  ServiceRefusal *refusal);
extern char *EqualityOperator(Oid type);

/* in changes.c */
extern bool ServeChanges(const ServiceRequest *req, Jsonb *since, ServiceAnswer *ans,
						 char **answer_json, ServiceRefusal *refusal);
extern bool ApplyChanges(Oid target, Oid owner, Jsonb *batch, bool reset, bool copy, int64 *applied);

/* in catalog.c */
extern char *CatalogJson(const char *consumer);
extern char *CatalogAnswer(const char *consumer, const char *if_none_match, char **etag);

/* in msglog.c */
extern int64 LogExchange(const ExchangeLog *l);
extern bool LoggedBodyKept(const char *jws);
extern char *LoggedJws(const char *stored);
extern const char *JwsHeaderRef(const char *stored, size_t len);
extern bool FindFirstRecord(const char *peer, const char *jti, LoggedAnswer *out);
extern int64 LogExchangeDurably(const ExchangeLog *l);
extern void LogExchangeAutonomously(const ExchangeLog *l);
extern Size LogQueueShmemSize(void);
extern void LogQueueShmemInit(void);
extern void WakeSyncWorker(void);
extern void SetSyncLatch(Latch *latch);
extern void RegisterLogWriter(void);
extern PGDLLEXPORT void LogWriterMain(Datum arg);
extern PGDLLEXPORT void OneShotLogWriterMain(Datum arg);

/* in seal.c */
extern int64 SealLogs(void);

/* in consent.c */
extern int64 ValidConsent(const char *subject, const char *consumer, const char *service,
						  const char *purpose);

/* in gateway.c */
extern void RegisterGatewayWorkers(void);
extern PGDLLEXPORT void GatewayMain(Datum arg);

/* in peerhttp.c */

/* an answer's bytes as libcurl delivers them (malloc'd: its callbacks must not ERROR) */
typedef struct PeerBody
{
	char	   *data;
	size_t		len;
	size_t		cap;
	bool		too_large;
} PeerBody;

/* what one connection's TLS check expects and saw, and libcurl's error text */
typedef struct PeerCall
{
	char		expected[256];	/* the member id the peer's certificate must name */
	char		presented[256];
	bool		mismatch;
	bool		staple_needed;	/* revocation unknown here: the server must staple */
	bool		ocsp_revoked;	/* ocsp_problem says the certificate is revoked */
	char		ocsp_problem[512];	/* why the server's OCSP status refused it */
	char		errbuf[CURL_ERROR_SIZE];
} PeerCall;

/* why a call did not complete, as the parts of its ERROR */
typedef struct PeerFailure
{
	int			sqlstate;
	char	   *message;
	char	   *detail;
	const char *hint;
	bool		retry;			/* another base URL of the peer may answer */
} PeerFailure;

/* an answer of a peer to a backend's call */
typedef struct PeerAnswer
{
	long		status;
	char	   *content_type;
	char	   *body;
	size_t		len;
} PeerAnswer;
extern size_t PeerBodyWrite(char *ptr, size_t size, size_t nmemb, void *userdata);
extern void PeerBodyReset(PeerBody *b);
extern void PeerIdentityLoad(void);
extern void PeerEasySetup(CURL *easy, PeerCall *call);
extern void PeerCallBegin(CURL *easy, PeerCall *call, const char *member, const char *url);
extern bool PeerReuseAllowed(const char *url, const char *member);
extern void PeerForgetConnections(void);
extern PeerFailure PeerFailureOf(CURLcode rc, const char *url, const PeerCall *call, bool too_large);
extern char *PeerFailureText(const PeerFailure *f);
extern bool JoseMediaType(const char *ctype);
extern void PeerExchange(const char *member, List *urls, const char *path, const char *body, PeerAnswer *res);
extern void PeerAnswerSigned(const char *member, const PeerAnswer *r);
extern List *PeerBaseUrls(const char *member, MemoryContext cxt);
extern bool PeerRelationChanged(Oid relid);
extern void InvalidatePeerCache(void);
extern List *PeerUrlOrder(const char *member, const char *base_url, Datum more_urls, bool more_isnull);
extern char *PeerFirstUrl(const char *member, HeapTuple tup, TupleDesc desc, int base_col, int more_col,
						  const char *path);
extern void PeerUrlAnswered(const char *member, const char *url);
extern void PeerUrlFailed(const char *member, const char *url);
extern void PeerRefusal(const char *member, const char *service, long status, const char *code,
						const char *message) pg_attribute_noreturn();

/* in transfer.c */
#define TRANSFER_SLOTS 16

typedef struct Transfer Transfer;

/*
 * A kind of transfer: its operations, called by the engine.  start()
 * claims slots for due work (in the engine's transaction, before it sends
 * anything); judge() verifies and records a finished transfer (in a
 * subtransaction: it may raise an ERROR); fail() records that ERROR;
 * next_due is an SQL expression for when its next work is due.
 */
typedef struct TransferKind
{
	const char *name;
	void		(*start) (void);
	void		(*judge) (Transfer *t);
	void		(*fail) (Transfer *t, ErrorData *edata);
	const char *next_due;
} TransferKind;

/* one transfer in flight, in a slot of the engine */
struct Transfer
{
	const TransferKind *kind;
	bool		busy;
	bool		finished;
	CURL	   *easy;
	MemoryContext cxt;			/* the transfer's: deleted when it ends */
	char	   *name;			/* what the kind's due query knows it by */
	char	   *member;			/* the member id the peer must be; NULL: plain HTTP */
	char	   *url;
	char	   *request;		/* POSTed when set, else a GET */
	int			request_len;	/* its length; 0: strlen(request) */
	const char *content_type;	/* of the request; NULL: application/jose */
	char	   *etag_sent;		/* sent as If-None-Match */
	char		etag_got[128];
	struct curl_slist *headers;
	PeerBody	got;
	PeerCall	call;
	CURLcode	rc;
	TimestampTz started;
	void	   *data;			/* the kind's own, in cxt */
};

/* a signed request a transfer sends, for its log record */
typedef struct TransferRequest
{
	char	   *service;
	char	   *purpose;
	char	   *jti;
	char	   *req_hash;
} TransferRequest;
extern Transfer *ClaimTransfer(const TransferKind *kind, const char *name, const char *member,
							   const char *url, MemoryContext *old);
extern void TransferStart(Transfer *t);
extern void TransferStartNow(Transfer *t, void (*prepare) (Transfer *t));
extern long TransferStatus(Transfer *t);
extern bool TransferSigned(Transfer *t);
extern char *TransferBody(Transfer *t);
extern PeerFailure TransferFailure(Transfer *t);
extern void TransferLog(Transfer *t, const TransferRequest *r, const char *subject, const char *response,
						long status, const char *error_code, const char *message, int row_count);
extern uint64 DueOfKind(const TransferKind *kind, const char *sql);
extern bool HasIdentity(void);
extern void TransferRound(long *timeout, bool woken);
extern void TransferReset(void);

/* in async.c */
extern int	interop_max_attempts;
extern const TransferKind async_transfers;

/* in catalog.c */
extern const TransferKind catalog_transfers;

/* in crlfetch.c */
extern const TransferKind crl_transfers;
extern const TransferKind ocsp_transfers;	/* in ocsp.c */

/* in subscribe.c */
extern const TransferKind subscription_transfers;

/* in tsa.c */
extern char *interop_tsa_url;
extern int	interop_max_timestamp_gap;
extern const TransferKind tsa_transfers;
extern bool TimestampingOn(void);
extern bool TsaCheckToken(X509_STORE *store, const unsigned char *der, long len, const unsigned char *digest,
						  TimestampTz *gen_time, char **tsa, bool *imprint_ok, char *why, size_t size);
extern void PublishTimestampState(void);
extern char *TimestampGapProblem(void);
extern void TimestampMetrics(StringInfo buf);

/* in witness.c */
extern const TransferKind witness_transfers;
extern char *ServeHead(const char *body, size_t len, const char *tls_member, HeadRequest *hr, int *status);
extern char *CosignatureProblem(const char *jws, const char *witness, int64 seal_id, const char *head);
extern void WitnessMetrics(StringInfo buf);

/* in stats.c */
extern Size InteropStatsShmemSize(void);
extern void NoteLogWrite(bool ok, const char *why);
extern void CountRefusedHandshake(int alert);
extern void NoteTimestampGap(TimestampTz since, const char *why);
extern TimestampTz TimestampGapSince(char *why, size_t whylen);
extern int	LogQueueDepth(void);
extern bool LogWriteFailing(int within_s, char *why, size_t whylen);
extern void InteropStatsShmemInit(void);
extern void CountExchange(char kind, const char *name, int status, double ms, const char *error);
extern void CountGroupCommit(int n);
extern char *MetricsText(const char *extra);

/* in sync.c */
extern int	interop_seal_interval;
extern int	interop_sync_interval;
extern int	interop_change_retention;
extern void RegisterSyncWorker(void);
extern PGDLLEXPORT void SyncMain(Datum arg);

#endif							/* INTEROP_H */
