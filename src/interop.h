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
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif
#include "utils/elog.h"
#include "utils/jsonb.h"
#include "utils/tuplestore.h"
#include "storage/latch.h"
#include "utils/timestamp.h"

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

/* the node's identity, loaded once per backend (keys.c) */
typedef struct NodeState
{
	char		member_id[256];
	JwsAlg		alg;
	EVP_PKEY   *key;
	STACK_OF(X509) *chain;		/* NULL until a certificate is installed */
	char	   *header_b64;		/* sign()'s protected header, built on use */
} NodeState;

/* a request after CheckRequest(): every claim verified (protocol.c) */
typedef struct ExchangeRequest
{
	char	   *iss;			/* consumer member id, canonical: the signer */
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

/* in consent.c */
extern int64 ValidConsent(const char *subject, const char *consumer, const char *service,
						  const char *purpose);

/* in gateway.c */
extern void RegisterGatewayWorkers(void);
extern void BeginWorkerTransaction(void);
extern void EndWorkerTransaction(void);
extern void RegisterInteropWorker(const char *function, const char *name, const char *type, Datum arg);
extern PGDLLEXPORT void GatewayMain(Datum arg);

/* in interop.c */
extern char *interop_key_file;
extern char *interop_database;
extern char *interop_listen_addresses;
extern int	interop_port;
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
extern int	interop_gateway_max_connections;
extern uint64 interop_identity_generation;
extern int	ExecuteCached(const char *sql, int nargs, Oid *argtypes, Datum *values,
						  const char *nulls, bool read_only, long count);
extern void _PG_init(void);

/* in member_id.c */
extern bool MemberIdParse(const char *str, char **canonical, char **problem);

/* in jws.c */
extern char *Base64UrlEncode(const unsigned char *data, size_t len);
extern unsigned char *Base64UrlDecode(const char *data, size_t len, size_t *outlen);
extern char *Base64Encode(const unsigned char *data, size_t len);
extern unsigned char *Base64Decode(const char *data, size_t len, size_t *outlen);
extern JwsAlg JwsAlgFromName(const char *name);
extern const char *JwsAlgName(JwsAlg alg);
extern void JwsAlgCheckKey(JwsAlg alg, EVP_PKEY *pkey);
extern char *JwsSignJson(const char *json, size_t len);
extern EVP_PKEY *PublicKeyFromPEM(const char *pem);
extern char *JwsVerifyCompact(const char *s, size_t len, EVP_PKEY *pubkey, const char **signer,
							  size_t *payload_len);

/* in msglog.c */
extern int64 LogExchange(const ExchangeLog *l);
extern bool LoggedBodyKept(const char *jws);
extern bool FindFirstRecord(const char *peer, const char *jti, LoggedAnswer *out);
extern int64 SealLogs(void);

/* in client.c, for the sync worker's transfers */
typedef struct Body
{
	char	   *data;
	size_t		len;
	size_t		cap;
	bool		too_large;
} Body;
extern size_t WriteBody(char *ptr, size_t size, size_t nmemb, void *userdata);
extern void LoadClientIdentity(void);
extern bool ClientTlsSetup(SSL_CTX *ctx, SSL_verify_cb verify);
extern int	RowsToTuplestore(Jsonb *payload, Tuplestorestate *ts, TupleDesc desc);
extern void ConfigureEasy(void *easy, void *ctxfunc, void *ctxdata);
extern bool ReuseAllowed(const char *url, const char *member);

/* in async.c */
extern int	interop_max_attempts;
extern int	interop_sync_interval;
extern void AsyncWorkerRound(long *timeout, bool woken);
extern void AsyncWorkerReset(void);

/* in msglog.c: the sync worker's latch, in the log queue's shared memory */
extern void WakeSyncWorker(void);
extern void SetSyncLatch(Latch *latch);

/* in stats.c */
extern Size InteropStatsShmemSize(void);
extern void InteropStatsShmemInit(void);
extern void CountExchange(char kind, const char *name, int status, double ms, const char *error);
extern char *MetricsText(const char *extra);

/* in sync.c */
extern int	interop_seal_interval;
extern int	interop_change_retention;
extern void RegisterSyncWorker(void);
extern PGDLLEXPORT void SyncMain(Datum arg);
extern int64 LogExchangeDurably(const ExchangeLog *l);
extern void LogExchangeAutonomously(const ExchangeLog *l);
extern Size LogQueueShmemSize(void);
extern void LogQueueShmemInit(void);
extern void RegisterLogWriter(void);
extern PGDLLEXPORT void LogWriterMain(Datum arg);
extern PGDLLEXPORT void OneShotLogWriterMain(Datum arg);

/* in protocol.c */
extern char *RequestHash(const char *body, size_t len);
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
extern void WireErrorFor(int sqlstate, int *status, const char **code);

/* in keys.c */
extern NodeState *GetNodeState(void);
extern bool NodeRelationChanged(Oid relid);
extern void InvalidateNodeCache(void);

/* in publish.c */
extern bool ServeRequest(const ServiceRequest *req, ServiceAnswer *ans, ServiceRefusal *refusal);
extern char *AnswerJson(const ServiceAnswer *ans);
extern char *CatalogJson(const char *consumer);
extern bool Refuse(ServiceRefusal *r, int status, const char *code, const char *fmt,...) pg_attribute_printf(4, 5);
extern bool LoadService(const char *name, Service *svc, ServiceRefusal *refusal);
extern bool AuthorizeConsumer(const Service *svc, const ServiceRequest *req, ServiceAnswer *ans,
							  ServiceRefusal *refusal);
extern char *EqualityOperator(Oid type);

/* in changes.c */
extern bool ServeChanges(const ServiceRequest *req, Jsonb *since, ServiceAnswer *ans,
						 char **answer_json, ServiceRefusal *refusal);
extern bool ApplyChanges(Oid target, Oid owner, Jsonb *batch, bool reset, bool copy, int64 *applied);

/* in x509.c */
extern bool InstallCrl(X509_CRL *crl);
extern List *CrlDistributionPoints(const char *pem, List *urls);
extern void OpenSSLError(int sqlstate, const char *msg, const char *hint) pg_attribute_noreturn();
extern char *OpenSSLErrorText(void);
extern void OwnEVPKey(EVP_PKEY *pkey);
extern void OwnX509(X509 *cert);
extern void OwnX509Stack(STACK_OF(X509) *certs);
extern BIO *NewMemBio(void);
extern char *MemBioText(BIO *bio);
extern char *CertificatePEM(X509 *cert);
extern STACK_OF(X509) *ParseCertificatesPEM(const char *pem, const char *what);
extern char *CertificateMemberId(X509 *cert);
extern EVP_PKEY *VerifyChain(STACK_OF(X509) *chain, const char **member_id);
extern EVP_PKEY *VerifyChainWindow(STACK_OF(X509) *chain, time_t *not_before, time_t *not_after);
extern EVP_PKEY *TrustedSignerKey(const char **x5c, const size_t *lens, int n,
								  const char **member_id, unsigned char *digest);
extern EVP_PKEY *CachedSignerKey(const unsigned char *digest, const char **member_id);
extern X509_STORE *LoadTrustStore(void);
extern int	TrustVerifyCallback(int ok, X509_STORE_CTX *ctx);
extern bool TrustRelationsChanged(Oid relid);
extern void InvalidateTrustCache(void);

#endif							/* INTEROP_H */
