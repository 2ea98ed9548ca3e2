/*-------------------------------------------------------------------------
 *
 * x509.c
 *	  Certificates: the trust store, chain verification and its cache,
 *	  add_trust_anchor() and add_crl().
 *
 * The trust store is built from interop.trust_anchor and interop.crl once
 * per backend and kept until a change to either table is committed.  Those
 * tables carry a statement trigger that sends a relcache invalidation for
 * themselves (interop_invalidate_cache() in interop.c), which every backend
 * receives at its next transaction start; our relcache callback then drops
 * the store and the chain cache.  So a new anchor or CRL takes effect in all
 * sessions without a query per verification.
 *
 * The chain cache maps the SHA-256 of a signer's certificate chain (the DER
 * of each certificate, leaf first) to the leaf's public key, the member id in
 * its subject CN and the window in which every certificate of the validated
 * chain is within its dates.  A repeated signer therefore costs one hash
 * lookup and one signature check, not a chain walk.  Outside that window the
 * chain is walked again, so expiry is never served from the cache.
 *
 * OpenSSL objects that a function creates are tied to the current memory
 * context by a reset callback (the Own* helpers), so an ereport() anywhere
 * after their creation frees them.  Objects kept in the caches live in
 * TopMemoryContext-owned structures and are freed on invalidation.
 *
 * Revocation: a certificate is checked against the CRL of its issuer when one
 * is installed.  A chain whose issuer has no CRL here is accepted (DBAs
 * install CRLs as their CAs publish them; the sync worker will fetch them
 * from distribution points).  A CRL past its nextUpdate is still applied.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

/*
 * OpenSSLErrorText - the reasons OpenSSL queued for this thread, joined, and
 * the queue cleared; NULL when the queue was empty.
 */
char *
OpenSSLErrorText(void)
{
	StringInfoData buf;
	unsigned long e;

	initStringInfo(&buf);
	while ((e = ERR_get_error()) != 0)
	{
		char		one[256];

		ERR_error_string_n(e, one, sizeof(one));
		if (buf.len > 0)
			appendStringInfoString(&buf, "; ");
		appendStringInfoString(&buf, one);
	}
	if (buf.len == 0)
		return NULL;
	return buf.data;
}

/* OpenSSLError - raise an ERROR carrying OpenSSL's reasons in errdetail */
void
OpenSSLError(int sqlstate, const char *msg, const char *hint)
{
	char	   *reason = OpenSSLErrorText();

	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("%s", msg),
			 reason ? errdetail("OpenSSL: %s.", reason) : 0,
			 hint ? errhint("%s", hint) : 0));
	pg_unreachable();
}

/*
 * Ownership of OpenSSL objects by memory contexts.  The object is freed when
 * the context that was current at registration is reset or deleted, which
 * includes error cleanup.
 */
static void
FreeEVPKeyCallback(void *arg)
{
	EVP_PKEY_free((EVP_PKEY *) arg);
}

static void
FreeX509Callback(void *arg)
{
	X509_free((X509 *) arg);
}

static void
FreeX509StackCallback(void *arg)
{
	sk_X509_pop_free((STACK_OF(X509) *) arg, X509_free);
}

static void
OwnWith(void *ptr, MemoryContextCallbackFunction fn)
{
	MemoryContextCallback *cb;

	if (ptr == NULL)
		return;
	cb = MemoryContextAlloc(CurrentMemoryContext, sizeof(MemoryContextCallback));
	cb->func = fn;
	cb->arg = ptr;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
}

/* OwnEVPKey - free pkey with the current memory context */
void
OwnEVPKey(EVP_PKEY *pkey)
{
	OwnWith(pkey, FreeEVPKeyCallback);
}

/* OwnX509 - free cert with the current memory context */
void
OwnX509(X509 *cert)
{
	OwnWith(cert, FreeX509Callback);
}

/* OwnX509Stack - free certs and the stack with the current memory context */
void
OwnX509Stack(STACK_OF(X509) *certs)
{
	OwnWith(certs, FreeX509StackCallback);
}

/* NewMemBio - an empty memory BIO, or an ERROR */
BIO *
NewMemBio(void)
{
	BIO		   *bio = BIO_new(BIO_s_mem());

	if (bio == NULL)
		OpenSSLError(ERRCODE_OUT_OF_MEMORY, "out of memory", NULL);
	return bio;
}

/* MemBioText - what was written to a memory BIO, palloc'd; frees the BIO */
char *
MemBioText(BIO *bio)
{
	char	   *data;
	long		len = BIO_get_mem_data(bio, &data);
	char	   *result = pnstrdup(data, len);

	BIO_free(bio);
	return result;
}

/*
 * ParseCertificatesPEM - every certificate of a PEM bundle, in order; owned
 * by the current memory context.  "what" names the input in errors.
 */
STACK_OF(X509) *
ParseCertificatesPEM(const char *pem, const char *what)
{
	STACK_OF(X509) *certs = sk_X509_new_null();
	BIO		   *bio;
	X509	   *cert;

	ERR_clear_error();
	if (certs == NULL)
		OpenSSLError(ERRCODE_OUT_OF_MEMORY, "out of memory", NULL);
	OwnX509Stack(certs);

	if (strstr(pem, "-----BEGIN CERTIFICATE-----") == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid %s: no PEM certificate found", what),
				 errdetail("The input has no \"-----BEGIN CERTIFICATE-----\" line."),
				 errhint("Pass the certificate in PEM form, as written by \"openssl x509 -outform PEM\".")));

	bio = BIO_new_mem_buf(pem, -1);
	if (bio == NULL)
		OpenSSLError(ERRCODE_OUT_OF_MEMORY, "out of memory", NULL);
	while ((cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
	{
		if (!sk_X509_push(certs, cert))
		{
			X509_free(cert);
			BIO_free(bio);
			OpenSSLError(ERRCODE_OUT_OF_MEMORY, "out of memory", NULL);
		}
	}
	BIO_free(bio);

	/* the loop ends at end of input (PEM_R_NO_START_LINE) or at bad input */
	{
		unsigned long e = ERR_peek_last_error();

		if (e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM &&
						ERR_GET_REASON(e) == PEM_R_NO_START_LINE))
			OpenSSLError(ERRCODE_INVALID_TEXT_REPRESENTATION,
						 psprintf("invalid %s: a PEM certificate could not be decoded", what),
						 "Check that the certificate was copied whole, including its BEGIN and END lines.");
		ERR_clear_error();
	}
	if (sk_X509_num(certs) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid %s: no PEM certificate could be read", what),
				 errhint("Check that the certificate was copied whole, including its BEGIN and END lines.")));
	return certs;
}

/* CertificateSubject - one-line subject of a certificate, palloc'd */
static char *
CertificateSubject(X509 *cert)
{
	char	   *s = X509_NAME_oneline(X509_get_subject_name(cert), NULL, 0);
	char	   *result;

	if (s == NULL)
		return pstrdup("(unknown)");
	result = pstrdup(s);
	OPENSSL_free(s);
	return result;
}

/*
 * CertificateMemberId - canonical member id in a certificate's subject CN, or
 * NULL when the CN is missing or is not a member id.
 */
char *
CertificateMemberId(X509 *cert)
{
	X509_NAME  *name = X509_get_subject_name(cert);
	int			idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	unsigned char *utf8;
	int			len;
	char	   *cn;
	char	   *canonical;
	char	   *problem;

	if (idx < 0)
		return NULL;
	len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx)));
	if (len < 0)
	{
		ERR_clear_error();
		return NULL;
	}
	cn = pnstrdup((char *) utf8, len);
	OPENSSL_free(utf8);
	if ((int) strlen(cn) != len || !MemberIdParse(cn, &canonical, &problem))
		return NULL;
	return canonical;
}

/* ---- trust store ---- */

static X509_STORE *trust_store = NULL;
static Oid	trust_anchor_relid = InvalidOid;
static Oid	crl_relid = InvalidOid;

/* chain cache */
typedef struct ChainCacheEntry
{
	unsigned char digest[32];	/* key: SHA-256 over the chain's DER */
	EVP_PKEY   *pkey;
	char		member_id[256];
	time_t		not_before;		/* latest notBefore in the chain */
	time_t		not_after;		/* earliest notAfter in the chain */
} ChainCacheEntry;

#define CHAIN_CACHE_MAX 1024

static HTAB *chain_cache = NULL;

/* InvalidateTrustCache - drop the trust store and every cached chain */
void
InvalidateTrustCache(void)
{
	if (trust_store != NULL)
	{
		X509_STORE_free(trust_store);
		trust_store = NULL;
	}
	if (chain_cache != NULL)
	{
		HASH_SEQ_STATUS status;
		ChainCacheEntry *entry;

		hash_seq_init(&status, chain_cache);
		while ((entry = hash_seq_search(&status)) != NULL)
			EVP_PKEY_free(entry->pkey);
		hash_destroy(chain_cache);
		chain_cache = NULL;
	}
}

/* TrustRelationsChanged - is relid one of the tables the trust store reads? */
bool
TrustRelationsChanged(Oid relid)
{
	return relid == InvalidOid || relid == trust_anchor_relid || relid == crl_relid;
}

/*
 * TrustVerifyCallback - accept a chain whose issuer has no CRL installed
 * here.  The TLS code chains its own checks after it.
 */
int
TrustVerifyCallback(int ok, X509_STORE_CTX *ctx)
{
	if (!ok)
	{
		int			err = X509_STORE_CTX_get_error(ctx);

		if (err == X509_V_ERR_UNABLE_TO_GET_CRL || err == X509_V_ERR_CRL_HAS_EXPIRED)
		{
			X509_STORE_CTX_set_error(ctx, X509_V_OK);
			return 1;
		}
	}
	return ok;
}

/*
 * LoadTrustStore - build the X509_STORE from interop.trust_anchor and
 * interop.crl.  The TLS code of the gateway and the client verifies peers
 * against the same store (taking a reference of its own).
 */
X509_STORE *
LoadTrustStore(void)
{
	X509_STORE *store;
	Oid			nsp;
	int			ret;
	uint64		i;

	if (trust_store != NULL)
		return trust_store;

	nsp = get_namespace_oid("interop", false);
	trust_anchor_relid = get_relname_relid("trust_anchor", nsp);
	crl_relid = get_relname_relid("crl", nsp);

	ERR_clear_error();
	store = X509_STORE_new();
	if (store == NULL)
		OpenSSLError(ERRCODE_OUT_OF_MEMORY, "out of memory", NULL);
	X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL |
						 X509_V_FLAG_PARTIAL_CHAIN);
	X509_STORE_set_verify_cb(store, TrustVerifyCallback);

	PG_TRY();
	{
		if ((ret = SPI_connect()) != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));

		ret = SPI_execute("SELECT certificate FROM interop.trust_anchor", true, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "could not read interop.trust_anchor: %s", SPI_result_code_string(ret));
		for (i = 0; i < SPI_processed; i++)
		{
			char	   *pem = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
			STACK_OF(X509) *certs = ParseCertificatesPEM(pem, "trust anchor");

			for (int j = 0; j < sk_X509_num(certs); j++)
				if (!X509_STORE_add_cert(store, sk_X509_value(certs, j)))
					ERR_clear_error();	/* a duplicate is harmless */
		}

		ret = SPI_execute("SELECT crl FROM interop.crl", true, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "could not read interop.crl: %s", SPI_result_code_string(ret));
		for (i = 0; i < SPI_processed; i++)
		{
			char	   *pem = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
			BIO		   *bio = BIO_new_mem_buf(pem, -1);
			X509_CRL   *crl = bio ? PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;

			BIO_free(bio);
			if (crl == NULL)
				OpenSSLError(ERRCODE_DATA_CORRUPTED,
							 "a stored certificate revocation list could not be decoded",
							 "Delete the row from interop.crl and add the CRL again with interop.add_crl().");
			if (!X509_STORE_add_crl(store, crl))
				ERR_clear_error();
			X509_CRL_free(crl);
		}
		SPI_finish();
	}
	PG_CATCH();
	{
		X509_STORE_free(store);
		PG_RE_THROW();
	}
	PG_END_TRY();

	trust_store = store;
	return store;
}

/* Asn1TimeToTimeT - seconds since the epoch of an ASN1_TIME */
static time_t
Asn1TimeToTimeT(const ASN1_TIME *t)
{
	struct tm	tm;

	if (!ASN1_TIME_to_tm(t, &tm))
		return 0;
	return timegm(&tm);
}

/* Asn1TimeText - an ASN1_TIME as text, palloc'd */
static char *
Asn1TimeText(const ASN1_TIME *t)
{
	BIO		   *bio = NewMemBio();

	if (!ASN1_TIME_print(bio, t))
	{
		BIO_free(bio);
		ERR_clear_error();
		return pstrdup("(unknown)");
	}
	return MemBioText(bio);
}

/*
 * VerifyChain - check that chain (leaf first, then intermediates) leads to a
 * trust anchor, that every certificate is within its dates and that none is
 * revoked.  Returns the leaf's public key (owned by the current memory
 * context) and sets the window in which the result stays true.
 */
EVP_PKEY *
VerifyChainWindow(STACK_OF(X509) *chain, time_t *not_before, time_t *not_after)
{
	X509_STORE *store = LoadTrustStore();
	X509_STORE_CTX *ctx;
	X509	   *leaf = sk_X509_value(chain, 0);
	STACK_OF(X509) *untrusted = sk_X509_new_null();
	int			ok;
	int			err = X509_V_OK;
	int			depth = 0;
	X509	   *bad = NULL;
	EVP_PKEY   *pkey;

	ERR_clear_error();
	for (int i = 1; i < sk_X509_num(chain); i++)
		sk_X509_push(untrusted, sk_X509_value(chain, i));

	ctx = X509_STORE_CTX_new();
	if (ctx == NULL || !X509_STORE_CTX_init(ctx, store, leaf, untrusted))
	{
		X509_STORE_CTX_free(ctx);
		sk_X509_free(untrusted);
		OpenSSLError(ERRCODE_OUT_OF_MEMORY, "could not set up certificate verification", NULL);
	}
	ok = X509_verify_cert(ctx);
	if (ok != 1)
	{
		err = X509_STORE_CTX_get_error(ctx);
		depth = X509_STORE_CTX_get_error_depth(ctx);
		bad = X509_STORE_CTX_get_current_cert(ctx);
		if (bad != NULL)
			X509_up_ref(bad);
	}
	else
	{
		STACK_OF(X509) *verified = X509_STORE_CTX_get0_chain(ctx);

		*not_before = 0;
		*not_after = (time_t) INT64CONST(0x7fffffffffff);
		for (int i = 0; i < sk_X509_num(verified); i++)
		{
			X509	   *c = sk_X509_value(verified, i);
			time_t		nb = Asn1TimeToTimeT(X509_get0_notBefore(c));
			time_t		na = Asn1TimeToTimeT(X509_get0_notAfter(c));

			if (nb > *not_before)
				*not_before = nb;
			if (na < *not_after)
				*not_after = na;
		}
	}
	X509_STORE_CTX_free(ctx);
	sk_X509_free(untrusted);

	if (ok != 1)
	{
		char	   *subject;

		OwnX509(bad);
		subject = bad ? CertificateSubject(bad) : CertificateSubject(leaf);
		ERR_clear_error();

		switch (err)
		{
			case X509_V_ERR_CERT_HAS_EXPIRED:
				ereport(ERROR,
						(errcode(ERRCODE_INTEROP_CERTIFICATE_NOT_VALID),
						 errmsg("certificate has expired"),
						 errdetail("Certificate \"%s\" (chain depth %d) was valid until %s.",
								   subject, depth, Asn1TimeText(X509_get0_notAfter(bad ? bad : leaf))),
						 errhint("The signer needs a new certificate from its CA.")));
				break;
			case X509_V_ERR_CERT_NOT_YET_VALID:
				ereport(ERROR,
						(errcode(ERRCODE_INTEROP_CERTIFICATE_NOT_VALID),
						 errmsg("certificate is not yet valid"),
						 errdetail("Certificate \"%s\" (chain depth %d) is valid from %s.",
								   subject, depth, Asn1TimeText(X509_get0_notBefore(bad ? bad : leaf))),
						 errhint("Check the clocks of both nodes.")));
				break;
			case X509_V_ERR_CERT_REVOKED:
				ereport(ERROR,
						(errcode(ERRCODE_INTEROP_CERTIFICATE_REVOKED),
						 errmsg("certificate has been revoked"),
						 errdetail("Certificate \"%s\" (chain depth %d) is listed in the installed revocation list of its issuer.",
								   subject, depth)));
				break;
			default:
				{
					bool		empty = sk_X509_OBJECT_num(X509_STORE_get0_objects(store)) == 0;

					ereport(ERROR,
							(errcode(ERRCODE_INTEROP_UNTRUSTED_CERTIFICATE),
							 errmsg("certificate is not trusted"),
							 errdetail("Certificate \"%s\" (chain depth %d): %s.",
									   subject, depth, X509_verify_cert_error_string(err)),
							 empty ?
							 errhint("This node has no trust anchor; add the federation's CA certificate with interop.add_trust_anchor().") :
							 errhint("The chain must lead to a CA certificate added with interop.add_trust_anchor().")));
				}
		}
	}

	pkey = X509_get_pubkey(leaf);
	if (pkey == NULL)
		OpenSSLError(ERRCODE_INTEROP_UNTRUSTED_CERTIFICATE,
					 "certificate has no usable public key", NULL);
	OwnEVPKey(pkey);
	return pkey;
}

/* VerifyChain - VerifyChainWindow for callers that do not cache */
EVP_PKEY *
VerifyChain(STACK_OF(X509) *chain, const char **member_id)
{
	time_t		nb,
				na;
	EVP_PKEY   *pkey = VerifyChainWindow(chain, &nb, &na);

	if (member_id)
		*member_id = CertificateMemberId(sk_X509_value(chain, 0));
	return pkey;
}

/*
 * CachedSignerKey - the key of a chain validated before, by the digest that
 * TrustedSignerKey() reported, if it is still cached and within its dates;
 * otherwise NULL.  The key is owned by the cache.
 */
EVP_PKEY *
CachedSignerKey(const unsigned char *digest, const char **member_id)
{
	ChainCacheEntry *entry;
	time_t		now;

	/* the store is loaded first: loading it may invalidate the cache */
	LoadTrustStore();
	if (chain_cache == NULL)
		return NULL;
	entry = hash_search(chain_cache, digest, HASH_FIND, NULL);
	now = time(NULL);
	if (entry == NULL || now < entry->not_before || now > entry->not_after)
		return NULL;
	*member_id = entry->member_id;
	return entry->pkey;
}

/*
 * TrustedSignerKey - public key of the signer whose chain is given as the
 * base64 DER strings of a JWS "x5c" header, after checking the chain (from
 * the cache when it was checked before and is still within its dates).
 * The returned key is owned by the cache: do not free it.  Sets *member_id
 * to the member id named by the leaf certificate, and digest (32 bytes) to
 * the chain's cache key for CachedSignerKey().
 */
EVP_PKEY *
TrustedSignerKey(const char **x5c, const size_t *lens, int n, const char **member_id,
				 unsigned char *digest)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	ChainCacheEntry *entry;
	bool		found;
	STACK_OF(X509) *chain;
	EVP_PKEY   *pkey;
	char	   *mid;
	time_t		nb,
				na;

	ERR_clear_error();
	if (md == NULL || !EVP_DigestInit_ex(md, EVP_sha256(), NULL))
	{
		EVP_MD_CTX_free(md);
		OpenSSLError(ERRCODE_OUT_OF_MEMORY, "could not hash a certificate chain", NULL);
	}
	for (int i = 0; i < n; i++)
	{
		/* a separator keeps ["ab","c"] apart from ["a","bc"] */
		EVP_DigestUpdate(md, x5c[i], lens[i]);
		EVP_DigestUpdate(md, ",", 1);
	}
	EVP_DigestFinal_ex(md, digest, NULL);
	EVP_MD_CTX_free(md);

	pkey = CachedSignerKey(digest, member_id);
	if (pkey != NULL)
		return pkey;
	if (chain_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = 32;
		ctl.entrysize = sizeof(ChainCacheEntry);
		chain_cache = hash_create("interop chain cache", 64, &ctl, HASH_ELEM | HASH_BLOBS);
	}

	/* decode and walk the chain */
	chain = sk_X509_new_null();
	if (chain == NULL)
		OpenSSLError(ERRCODE_OUT_OF_MEMORY, "out of memory", NULL);
	OwnX509Stack(chain);
	for (int i = 0; i < n; i++)
	{
		size_t		derlen;
		unsigned char *der = Base64Decode(x5c[i], lens[i], &derlen);
		const unsigned char *p = der;
		X509	   *cert;

		if (der == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INTEROP_UNTRUSTED_CERTIFICATE),
					 errmsg("invalid x5c header: certificate %d is not valid base64", i)));
		cert = d2i_X509(NULL, &p, derlen);
		if (cert == NULL || p != der + derlen)
		{
			X509_free(cert);
			OpenSSLError(ERRCODE_INTEROP_UNTRUSTED_CERTIFICATE,
						 psprintf("invalid x5c header: certificate %d is not a DER certificate", i),
						 NULL);
		}
		sk_X509_push(chain, cert);
	}

	pkey = VerifyChainWindow(chain, &nb, &na);
	mid = CertificateMemberId(sk_X509_value(chain, 0));
	if (mid == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_MEMBER_MISMATCH),
				 errmsg("signer certificate does not name a member id"),
				 errdetail("The subject CN of \"%s\" is not of the form INSTANCE/CLASS/CODE[/SUBSYSTEM].",
						   CertificateSubject(sk_X509_value(chain, 0)))));

	/* remember it */
	if (hash_get_num_entries(chain_cache) >= CHAIN_CACHE_MAX)
	{
		/* simple bound: start over rather than track recency */
		InvalidateTrustCache();
		LoadTrustStore();
		{
			HASHCTL		ctl;

			ctl.keysize = 32;
			ctl.entrysize = sizeof(ChainCacheEntry);
			chain_cache = hash_create("interop chain cache", 64, &ctl, HASH_ELEM | HASH_BLOBS);
		}
	}
	entry = hash_search(chain_cache, digest, HASH_ENTER, &found);
	if (found)
		EVP_PKEY_free(entry->pkey);
	EVP_PKEY_up_ref(pkey);
	entry->pkey = pkey;
	strlcpy(entry->member_id, mid, sizeof(entry->member_id));
	entry->not_before = nb;
	entry->not_after = na;
	*member_id = entry->member_id;
	return entry->pkey;
}

/* CertificateFingerprint - hex SHA-256 of a certificate's DER, palloc'd */
static char *
CertificateFingerprint(X509 *cert)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len;
	char	   *hex;

	if (!X509_digest(cert, EVP_sha256(), md, &len))
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not hash a certificate", NULL);
	hex = palloc(len * 2 + 1);
	hex_encode((char *) md, len, hex);
	hex[len * 2] = '\0';
	return hex;
}

/* CertificatePEM - a certificate in PEM form, palloc'd */
char *
CertificatePEM(X509 *cert)
{
	BIO		   *bio = NewMemBio();

	if (!PEM_write_bio_X509(bio, cert))
	{
		BIO_free(bio);
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not encode a certificate", NULL);
	}
	return MemBioText(bio);
}

/* TimestampFromAsn1 - an ASN1_TIME as a timestamptz datum */
static Datum
TimestampFromAsn1(const ASN1_TIME *t)
{
	return TimestampTzGetDatum(time_t_to_timestamptz(Asn1TimeToTimeT(t)));
}

PG_FUNCTION_INFO_V1(interop_add_trust_anchor);
/*
 * interop_add_trust_anchor - add the CA certificates of a PEM bundle to the
 * trust anchors; returns the number added (duplicates are skipped).
 */
Datum
interop_add_trust_anchor(PG_FUNCTION_ARGS)
{
	char	   *pem = text_to_cstring(PG_GETARG_TEXT_PP(0));
	STACK_OF(X509) *certs = ParseCertificatesPEM(pem, "trust anchor");
	int			added = 0;
	int			ret;

	for (int i = 0; i < sk_X509_num(certs); i++)
	{
		X509	   *cert = sk_X509_value(certs, i);

		if (X509_check_ca(cert) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("certificate \"%s\" is not a CA certificate", CertificateSubject(cert)),
					 errdetail("A trust anchor must carry basicConstraints CA:TRUE."),
					 errhint("Add the CA that issued the node certificates, not a node certificate.")));
	}

	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
	for (int i = 0; i < sk_X509_num(certs); i++)
	{
		X509	   *cert = sk_X509_value(certs, i);
		Oid			types[5] = {TEXTOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID};
		Datum		values[5];

		values[0] = CStringGetTextDatum(CertificateFingerprint(cert));
		values[1] = CStringGetTextDatum(CertificateSubject(cert));
		values[2] = TimestampFromAsn1(X509_get0_notBefore(cert));
		values[3] = TimestampFromAsn1(X509_get0_notAfter(cert));
		values[4] = CStringGetTextDatum(CertificatePEM(cert));
		ret = SPI_execute_with_args("INSERT INTO interop.trust_anchor "
									"(fingerprint, subject, not_before, not_after, certificate) "
									"VALUES ($1, $2, $3, $4, $5) ON CONFLICT (fingerprint) DO NOTHING",
									5, types, values, NULL, false, 0);
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "could not insert into interop.trust_anchor: %s", SPI_result_code_string(ret));
		if (SPI_processed == 0)
			ereport(NOTICE,
					(errmsg("trust anchor \"%s\" is already installed, skipping",
							CertificateSubject(cert))));
		added += SPI_processed;
	}
	SPI_finish();
	PG_RETURN_INT32(added);
}

/*
 * CrlIssuerInNodeChain - an intermediate CA of the node's own certificate
 * chain that signed the CRL, if that CA still chains to a trust anchor
 * (intermediates are usually not anchors, and their CRLs are the ones that
 * change); NULL otherwise.
 */
static X509 *
CrlIssuerInNodeChain(X509_CRL *crl)
{
	int			ret;
	STACK_OF(X509) *chain;
	MemoryContext outer = CurrentMemoryContext;
	char	   *pem;

	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
	ret = SPI_execute("SELECT certificate_chain FROM interop.node WHERE certificate_chain IS NOT NULL", true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed == 0)
	{
		SPI_finish();
		return NULL;
	}
	pem = MemoryContextStrdup(outer, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	SPI_finish();
	chain = ParseCertificatesPEM(pem, "node certificate chain");
	for (int i = 1; i < sk_X509_num(chain); i++)
	{
		X509	   *c = sk_X509_value(chain, i);
		EVP_PKEY   *k = X509_get0_pubkey(c);

		if (X509_NAME_cmp(X509_get_subject_name(c), X509_CRL_get_issuer(crl)) == 0 &&
			k && X509_CRL_verify(crl, k) == 1)
		{
			STACK_OF(X509) *up = sk_X509_new_null();

			OwnX509Stack(up);
			for (int j = i; j < sk_X509_num(chain); j++)
			{
				X509_up_ref(sk_X509_value(chain, j));
				sk_X509_push(up, sk_X509_value(chain, j));
			}
			(void) VerifyChain(up, NULL);	/* an ERROR unless it reaches an anchor */
			return c;
		}
	}
	ERR_clear_error();
	return NULL;
}

/*
 * InstallCrl - install a CRL after checking its signature against its
 * issuer among the trust anchors; replaces an older CRL of the same issuer.
 * Takes ownership of crl.  False (with a NOTICE) when one at least as recent
 * is installed.
 */
bool
InstallCrl(X509_CRL *crl)
{
	X509_STORE *store;
	X509	   *issuer = NULL;
	STACK_OF(X509_OBJECT) *objs;
	char	   *issuer_name;
	char	   *crl_pem;
	Datum		values[4];
	Oid			types[4] = {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID};
	int			ret;
	bool		installed;

	/* find the issuer among the anchors and check the CRL's signature */
	store = LoadTrustStore();
	objs = X509_STORE_get0_objects(store);
	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++)
	{
		X509	   *c = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));

		if (c && X509_NAME_cmp(X509_get_subject_name(c), X509_CRL_get_issuer(crl)) == 0)
		{
			EVP_PKEY   *k = X509_get0_pubkey(c);

			if (k && X509_CRL_verify(crl, k) == 1)
			{
				issuer = c;
				break;
			}
		}
	}
	if (issuer == NULL)
		issuer = CrlIssuerInNodeChain(crl);
	{
		char	   *s = X509_NAME_oneline(X509_CRL_get_issuer(crl), NULL, 0);

		issuer_name = pstrdup(s ? s : "(unknown)");
		OPENSSL_free(s);
	}
	if (issuer == NULL)
	{
		X509_CRL_free(crl);
		ERR_clear_error();
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_UNTRUSTED_CERTIFICATE),
				 errmsg("certificate revocation list is not signed by a trust anchor"),
				 errdetail("No trust anchor named \"%s\" has a key that verifies this CRL.", issuer_name),
				 errhint("Add the issuing CA with interop.add_trust_anchor() first.")));
	}

	values[0] = CStringGetTextDatum(issuer_name);
	values[1] = TimestampFromAsn1(X509_CRL_get0_lastUpdate(crl));
	values[2] = X509_CRL_get0_nextUpdate(crl) ?
		TimestampFromAsn1(X509_CRL_get0_nextUpdate(crl)) : (Datum) 0;
	{
		BIO		   *out = BIO_new(BIO_s_mem());

		if (out == NULL || !PEM_write_bio_X509_CRL(out, crl))
		{
			BIO_free(out);
			X509_CRL_free(crl);
			OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not encode a CRL", NULL);
		}
		crl_pem = MemBioText(out);
	}
	X509_CRL_free(crl);
	values[3] = CStringGetTextDatum(crl_pem);

	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
	ret = SPI_execute_with_args("INSERT INTO interop.crl AS c (issuer, this_update, next_update, crl) "
								"VALUES ($1, $2, $3, $4) ON CONFLICT (issuer) DO UPDATE "
								"SET this_update = excluded.this_update, next_update = excluded.next_update, "
								"crl = excluded.crl, installed_at = now() "
								"WHERE c.this_update < excluded.this_update",
								4, types, values, values[2] ? "    " : "  n ", false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not insert into interop.crl: %s", SPI_result_code_string(ret));
	installed = SPI_processed > 0;
	SPI_finish();
	if (!installed)
		ereport(NOTICE,
				(errmsg("a revocation list of \"%s\" at least as recent is already installed, skipping",
						issuer_name)));
	return installed;
}

/*
 * CrlDistributionPoints - the http:// URLs of the CRL distribution points
 * named by the certificates of a PEM bundle (each URL once)
 */
List *
CrlDistributionPoints(const char *pem, List *urls)
{
	STACK_OF(X509) *certs = ParseCertificatesPEM(pem, "certificate");

	for (int i = 0; i < sk_X509_num(certs); i++)
	{
		STACK_OF(DIST_POINT) *dps = X509_get_ext_d2i(sk_X509_value(certs, i), NID_crl_distribution_points, NULL, NULL);

		for (int j = 0; j < sk_DIST_POINT_num(dps); j++)
		{
			DIST_POINT *dp = sk_DIST_POINT_value(dps, j);
			GENERAL_NAMES *names = dp->distpoint && dp->distpoint->type == 0 ? dp->distpoint->name.fullname : NULL;

			for (int k = 0; k < sk_GENERAL_NAME_num(names); k++)
			{
				GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, k);
				const char *uri;
				bool		seen = false;
				ListCell   *lc;

				if (gn->type != GEN_URI)
					continue;
				uri = (const char *) ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
				if (pg_strncasecmp(uri, "http://", 7) != 0)
					continue;
				foreach(lc, urls)
					seen |= strcmp(lfirst(lc), uri) == 0;
				if (!seen)
					urls = lappend(urls, pstrdup(uri));
			}
		}
		sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
	}
	return urls;
}

PG_FUNCTION_INFO_V1(interop_add_crl);
/*
 * interop_add_crl - install a CRL after checking its signature against its
 * issuer among the trust anchors; replaces an older CRL of the same issuer.
 */
Datum
interop_add_crl(PG_FUNCTION_ARGS)
{
	char	   *pem = text_to_cstring(PG_GETARG_TEXT_PP(0));
	BIO		   *bio;
	X509_CRL   *crl;

	ERR_clear_error();
	if (strstr(pem, "-----BEGIN X509 CRL-----") == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid certificate revocation list: no PEM CRL found"),
				 errdetail("The input has no \"-----BEGIN X509 CRL-----\" line."),
				 errhint("Pass the CRL in PEM form, as written by \"openssl crl -outform PEM\".")));
	bio = BIO_new_mem_buf(pem, -1);
	crl = bio ? PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	if (crl == NULL)
		OpenSSLError(ERRCODE_INVALID_TEXT_REPRESENTATION,
					 "invalid certificate revocation list: the PEM CRL could not be decoded",
					 "Check that the CRL was copied whole, including its BEGIN and END lines.");

	PG_RETURN_BOOL(InstallCrl(crl));
}
