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

#include <openssl/bio.h>
#include <openssl/evp.h>
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

/* in interop.c */
extern char *interop_key_file;
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

/* in keys.c */
extern NodeState *GetNodeState(void);
extern bool NodeRelationChanged(Oid relid);
extern void InvalidateNodeCache(void);

/* in x509.c */
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
extern bool TrustRelationsChanged(Oid relid);
extern void InvalidateTrustCache(void);

#endif							/* INTEROP_H */
