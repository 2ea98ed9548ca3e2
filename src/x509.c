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
 * Revocation: a certificate is checked against the CRL of its issuer.  When
 * the node has no current CRL of that issuer, interop.revocation_check
 * decides: "require" (the default) refuses a certificate that names a CRL
 * distribution point (its CA publishes CRLs, so not having one is not
 * knowing), with IX012 revocation_unknown, and accepts one that names
 * none; "best_effort" accepts both.  A CRL past its nextUpdate counts as
 * none.  The CRLs come from add_crl() and from the distribution points
 * the sync worker fetches: those of the anchors and the node's chain, and
 * those named by every chain a worker has seen (SeenChain() below), whose
 * intermediate CAs are kept in interop.ca_certificate so that their CRLs
 * can be checked.
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
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>


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
char *
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

/* ---- certificates seen ---- */

/*
 * Chains that a TLS handshake refused for an unknown revocation status.
 * The verify callback cannot check them further (OpenSSL checks
 * revocation before signatures), so they wait here until the worker's
 * next transaction: NoteRefusedChains() verifies their signatures, and
 * only then are their distribution points fetched.
 */
static STACK_OF(X509) *refused_chains[8];
static int	refused_chains_n = 0;

/* set while VerifyChainKnownRevocation() runs */
static bool revocation_unknown_ok = false;

/*
 * What the verify callback learnt from OCSP during one verification, for
 * its error message and the chain cache's window
 */
static const OcspVerdict *ocsp_revoked = NULL;	/* the answer that said revoked */
static time_t ocsp_until = 0;	/* the first answer relied on stops counting */



int			interop_revocation_check = REVOCATION_REQUIRE;

/*
 * The intermediate CAs and CRL distribution points of chains that this
 * process verified, not yet recorded.  Only background workers keep them:
 * they are the processes that see every peer (the gateway its consumers,
 * the sync worker every provider, through their catalogs), and they record
 * them in a transaction of theirs (RecordSeenCertificates).
 */
static List *seen_cas = NIL;	/* PEM, TopMemoryContext */
static List *seen_cdps = NIL;	/* URLs, TopMemoryContext */
static List *seen_ocsp = NIL;	/* SeenOcsp, TopMemoryContext */
static HTAB *seen_chains = NULL;	/* digests of chains already noted */
static bool recording_seen = false; /* RecordSeenCertificates() under way */

/*
 * CertificateCdps - the http:// CRL distribution points named by cert,
 * appended to urls (each URL once), in the current memory context
 */
static List *
CertificateCdps(X509 *cert, List *urls)
{
	STACK_OF(DIST_POINT) *dps = X509_get_ext_d2i(cert, NID_crl_distribution_points, NULL, NULL);

	for (int j = 0; j < sk_DIST_POINT_num(dps); j++)
	{
		DIST_POINT *dp = sk_DIST_POINT_value(dps, j);
		GENERAL_NAMES *names = dp->distpoint && dp->distpoint->type == 0 ? dp->distpoint->name.fullname : NULL;

		for (int k = 0; k < sk_GENERAL_NAME_num(names); k++)
		{
			GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, k);
			const char *uri;
			int			len;
			bool		seen = false;
			ListCell   *lc;

			if (gn->type != GEN_URI)
				continue;
			uri = (const char *) ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
			len = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
			if (len <= 7 || len >= 2048 || (int) strlen(uri) != len || pg_strncasecmp(uri, "http://", 7) != 0)
				continue;
			foreach(lc, urls)
				seen |= strcmp(lfirst(lc), uri) == 0;
			if (!seen)
				urls = lappend(urls, pstrdup(uri));
		}
	}
	sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
	return urls;
}

/* a certificate that names an OCSP responder, and its issuer, as PEM */
typedef struct SeenOcsp
{
	char	   *cert;
	char	   *issuer;
	char	   *url;
} SeenOcsp;

/*
 * SeenChain - note the intermediate CAs and distribution points of a chain
 * (leaf first, up to its anchor) whose signatures verified.  Once per
 * chain and process.
 */
static void
SeenChain(STACK_OF(X509) *chain)
{
	unsigned char digest[32];
	unsigned int dlen;
	EVP_MD_CTX *md;
	bool		found;
	MemoryContext old;

	if (!InBackgroundWorker() || sk_X509_num(chain) == 0)
		return;
	md = EVP_MD_CTX_new();
	if (md == NULL || !EVP_DigestInit_ex(md, EVP_sha256(), NULL))
	{
		EVP_MD_CTX_free(md);
		return;
	}
	for (int i = 0; i < sk_X509_num(chain); i++)
	{
		unsigned char d[EVP_MAX_MD_SIZE];
		unsigned int n;

		if (X509_digest(sk_X509_value(chain, i), EVP_sha256(), d, &n))
			EVP_DigestUpdate(md, d, n);
	}
	EVP_DigestFinal_ex(md, digest, &dlen);
	EVP_MD_CTX_free(md);
	if (seen_chains == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = 32;
		ctl.entrysize = 32;
		seen_chains = hash_create("interop chains seen", 64, &ctl, HASH_ELEM | HASH_BLOBS);
	}
	if (hash_get_num_entries(seen_chains) > 10000)
	{
		hash_destroy(seen_chains);
		seen_chains = NULL;
		return;
	}
	hash_search(seen_chains, digest, HASH_ENTER, &found);
	if (found)
		return;
	/* the lists outlive the transaction (if any) this runs in */
	old = MemoryContextSwitchTo(TopMemoryContext);
	for (int i = 0; i < sk_X509_num(chain); i++)
	{
		X509	   *c = sk_X509_value(chain, i);

		char		url[2048];

		seen_cdps = CertificateCdps(c, seen_cdps);
		if (i < sk_X509_num(chain) - 1 && OcspResponderUrl(c, url, sizeof(url)))
		{
			SeenOcsp   *o = palloc(sizeof(SeenOcsp));

			o->cert = CertificatePEM(c);
			o->issuer = CertificatePEM(sk_X509_value(chain, i + 1));
			o->url = pstrdup(url);
			seen_ocsp = lappend(seen_ocsp, o);
		}
		/* the CAs between the leaf and the anchor */
		if (i > 0 && i < sk_X509_num(chain) - 1)
			seen_cas = lappend(seen_cas, CertificatePEM(c));
	}
	MemoryContextSwitchTo(old);
}

/*
 * NoteRefusedChains - the chains TLS refused for an unknown revocation
 * status: those whose signatures verify up to an anchor are noted.
 */
static void
NoteRefusedChains(void)
{
	while (refused_chains_n > 0)
	{
		STACK_OF(X509) *chain = refused_chains[--refused_chains_n];
		X509_STORE_CTX *ctx = X509_STORE_CTX_new();
		STACK_OF(X509) *untrusted = sk_X509_new_null();

		for (int i = 1; i < sk_X509_num(chain); i++)
			sk_X509_push(untrusted, sk_X509_value(chain, i));
		if (ctx != NULL && untrusted != NULL && sk_X509_num(chain) > 0 &&
			X509_STORE_CTX_init(ctx, LoadTrustStore(), sk_X509_value(chain, 0), untrusted))
		{
			X509_VERIFY_PARAM_clear_flags(X509_STORE_CTX_get0_param(ctx),
										  X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
			if (X509_verify_cert(ctx) == 1)
				SeenChain(X509_STORE_CTX_get0_chain(ctx));
		}
		X509_STORE_CTX_free(ctx);
		sk_X509_free(untrusted);
		sk_X509_pop_free(chain, X509_free);
		ERR_clear_error();
	}
}

/* RecordCaCertificate - keep a CA in interop.ca_certificate; connected to SPI */
static void
RecordCaCertificate(X509 *c)
{
	Datum		values[3];
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};

	values[0] = CStringGetTextDatum(CertificateFingerprint(c));
	values[1] = CStringGetTextDatum(CertificateSubject(c));
	values[2] = CStringGetTextDatum(CertificatePEM(c));
	if (SPI_execute_with_args("INSERT INTO interop.ca_certificate (fingerprint, subject, certificate) "
							  "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
							  3, types, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write interop.ca_certificate");
}

/*
 * RecordCrlSource - a distribution point for the sync worker to fetch;
 * whether it is new.  Connected to SPI.
 */
bool
RecordCrlSource(const char *url)
{
	Datum		u = CStringGetTextDatum(url);
	Oid			ut = TEXTOID;

	if (SPI_execute_with_args("INSERT INTO interop.crl_source (url) VALUES ($1) ON CONFLICT DO NOTHING",
							  1, &ut, &u, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write interop.crl_source");
	return SPI_processed > 0;
}

/*
 * RecordSeenCertificates - write what SeenChain() noted into
 * interop.ca_certificate and interop.crl_source; in a worker transaction,
 * connected to SPI.  Returns how many distribution points were new (the
 * sync worker then fetches them).
 */
int
RecordSeenCertificates(void)
{
	ListCell   *lc;
	int			added = 0;
	List	   *cas;
	List	   *cdps;
	List	   *ocsp;

	/*
	 * The last write failed (its transaction aborted, say on a full disk):
	 * what it held is gone, so every chain is noted again when next seen.
	 */
	if (recording_seen && seen_chains != NULL)
	{
		hash_destroy(seen_chains);
		seen_chains = NULL;
	}
	NoteRefusedChains();
	cas = seen_cas;
	cdps = seen_cdps;
	ocsp = seen_ocsp;
	seen_cas = seen_cdps = seen_ocsp = NIL;
	recording_seen = true;
	foreach(lc, cas)
		RecordCaCertificate(sk_X509_value(ParseCertificatesPEM(lfirst(lc), "certificate authority"), 0));
	foreach(lc, cdps)
		added += RecordCrlSource(lfirst(lc)) ? 1 : 0;
	foreach(lc, ocsp)
	{
		SeenOcsp   *o = lfirst(lc);

		added += RecordOcspSubject(sk_X509_value(ParseCertificatesPEM(o->cert, "certificate"), 0),
								   sk_X509_value(ParseCertificatesPEM(o->issuer, "certificate"), 0),
								   o->url) ? 1 : 0;
		pfree(o->cert);
		pfree(o->issuer);
		pfree(o->url);
	}
	recording_seen = false;
	list_free_deep(cas);
	list_free_deep(cdps);
	list_free_deep(ocsp);
	return added;
}

/*
 * RecordChainForOcsp - the certificates of the node's own chain that name
 * an OCSP responder, for the sync worker to ask about (their answers are
 * the ones the gateway staples); connected to SPI.  The chain is verified
 * up to an anchor first, without revocation checks: its own status is
 * what is to be fetched.
 */
void
RecordChainForOcsp(STACK_OF(X509) *chain)
{
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	STACK_OF(X509) *untrusted = sk_X509_new_null();
	STACK_OF(X509) *verified = NULL;

	for (int i = 1; i < sk_X509_num(chain); i++)
		sk_X509_push(untrusted, sk_X509_value(chain, i));
	if (ctx != NULL && untrusted != NULL && sk_X509_num(chain) > 0 &&
		X509_STORE_CTX_init(ctx, LoadTrustStore(), sk_X509_value(chain, 0), untrusted))
	{
		X509_VERIFY_PARAM_clear_flags(X509_STORE_CTX_get0_param(ctx),
									  X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
		revocation_unknown_ok = true;
		if (X509_verify_cert(ctx) == 1)
			verified = X509_STORE_CTX_get1_chain(ctx);
		revocation_unknown_ok = false;
	}
	X509_STORE_CTX_free(ctx);
	sk_X509_free(untrusted);
	ERR_clear_error();
	if (verified == NULL)
		return;
	OwnX509Stack(verified);
	for (int i = 0; i < sk_X509_num(verified) - 1; i++)
	{
		char		url[2048];

		if (OcspResponderUrl(sk_X509_value(verified, i), url, sizeof(url)))
			(void) RecordOcspSubject(sk_X509_value(verified, i), sk_X509_value(verified, i + 1), url);
	}
}

/* ---- trust store ---- */

static X509_STORE *trust_store = NULL;
static uint64 trust_invalidations = 0;	/* InvalidateTrustCache() calls */
static Oid	trust_anchor_relid = InvalidOid;
static Oid	crl_relid = InvalidOid;
static Oid	ocsp_relid = InvalidOid;

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

/* FreeTrustStore - drop the cache's reference to a store (RetireAtTransactionEnd) */
static void
FreeTrustStore(void *arg)
{
	X509_STORE_free(arg);
}

/* ForgetTrustStore - a store built from a transaction snapshot leaves the cache with it */
static void
ForgetTrustStore(void *arg)
{
	if (trust_store == arg)
		trust_store = NULL;
	X509_STORE_free(arg);
}

/* FreeChainCache - free a dropped chain cache and its keys */
static void
FreeChainCache(void *arg)
{
	HTAB	   *cache = arg;
	HASH_SEQ_STATUS status;
	ChainCacheEntry *entry;

	hash_seq_init(&status, cache);
	while ((entry = hash_seq_search(&status)) != NULL)
		EVP_PKEY_free(entry->pkey);
	hash_destroy(cache);
}

/*
 * InvalidateTrustCache - drop the trust store and every cached chain.  They
 * are freed when the transaction ends (a caller may still hold the store or
 * a signer key); anything that keeps the store longer takes a reference.
 */
void
InvalidateTrustCache(void)
{
	trust_invalidations++;
	RetireAtTransactionEnd(FreeTrustStore, trust_store);
	trust_store = NULL;
	OcspForgetStaples();
	RetireAtTransactionEnd(FreeChainCache, chain_cache);
	chain_cache = NULL;
}

/* TrustRelationsChanged - is relid one of the tables the trust store reads? */
bool
TrustRelationsChanged(Oid relid)
{
	return relid == InvalidOid || relid == trust_anchor_relid || relid == crl_relid ||
		relid == ocsp_relid;
}


/* NamesCdp - does a certificate name a CRL distribution point? */
static bool
NamesCdp(X509 *cert)
{
	STACK_OF(DIST_POINT) *dps = cert ? X509_get_ext_d2i(cert, NID_crl_distribution_points, NULL, NULL) : NULL;
	bool		names = sk_DIST_POINT_num(dps) > 0;

	sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
	return names;
}

/*
 * TrustVerifyCallback - revocation by OCSP, and interop.revocation_check
 * for a certificate whose status is not known here.  A stored OCSP answer
 * that says revoked refuses the certificate, whatever its CRL says.  A
 * certificate whose issuer has no current CRL here is accepted when a
 * fresh OCSP answer says good, when it names neither a distribution point
 * nor a responder (or is a responder's own, marked not to be checked), or
 * when the policy is best_effort; otherwise the verification fails with
 * X509_V_ERR_UNABLE_TO_GET_CRL, which VerifyChainWindow reports as IX012.
 * The TLS code chains its own checks after it.
 */
int
TrustVerifyCallback(int ok, X509_STORE_CTX *ctx)
{
	X509	   *cert = X509_STORE_CTX_get_current_cert(ctx);
	const OcspVerdict *v = OcspFind(X509_STORE_CTX_get0_store(ctx), cert);
	int			err = ok ? X509_V_OK : X509_STORE_CTX_get_error(ctx);

	if (v != NULL && v->status == V_OCSP_CERTSTATUS_REVOKED &&
		(ok || err == X509_V_ERR_UNABLE_TO_GET_CRL || err == X509_V_ERR_CRL_HAS_EXPIRED))
	{
		ocsp_revoked = v;
		X509_STORE_CTX_set_error(ctx, X509_V_ERR_CERT_REVOKED);
		return 0;
	}
	if (!ok && (err == X509_V_ERR_UNABLE_TO_GET_CRL || err == X509_V_ERR_CRL_HAS_EXPIRED))
	{
		time_t		until;
		char		url[2048];

		if (v != NULL && v->status == V_OCSP_CERTSTATUS_GOOD && OcspFresh(v, time(NULL), &until))
		{
			if (ocsp_until == 0 || until < ocsp_until)
				ocsp_until = until;
			X509_STORE_CTX_set_error(ctx, X509_V_OK);
			return 1;
		}
		if (interop_revocation_check == REVOCATION_BEST_EFFORT || revocation_unknown_ok ||
			(!NamesCdp(cert) && !OcspResponderUrl(cert, url, sizeof(url))) ||
			OcspResponderOnly(cert))
		{
			X509_STORE_CTX_set_error(ctx, X509_V_OK);
			return 1;
		}
		/* checked and noted later, outside OpenSSL (NoteRefusedChains) */
		if (InBackgroundWorker() && refused_chains_n < lengthof(refused_chains))
		{
			STACK_OF(X509) *chain = X509_STORE_CTX_get1_chain(ctx);

			if (chain != NULL)
				refused_chains[refused_chains_n++] = chain;
		}
		X509_STORE_CTX_set_error(ctx, X509_V_ERR_UNABLE_TO_GET_CRL);
		return 0;
	}
	return ok;
}

/*
 * LoadTrustStore - build the X509_STORE from interop.trust_anchor and
 * interop.crl.  The pointer is the cache's: valid until the end of the
 * transaction.  The TLS code of the gateway and the client verifies peers
 * against the same store, and takes a reference of its own
 * (X509_STORE_up_ref, or OpenSSL's set1 functions) to keep it longer.
 */
static X509_STORE *BuildTrustStore(void);

X509_STORE *
LoadTrustStore(void)
{
	X509_STORE *store = NULL;

	if (trust_store != NULL)
		return trust_store;

	/*
	 * A change that commits while the store is built is taken in (as an
	 * invalidation) when the tables are locked, after the rows were read
	 * with an older snapshot: that store would be cached without the change
	 * until the next one.  Build again, with a new snapshot, until no
	 * invalidation came in meanwhile.
	 */
	for (int attempt = 0;; attempt++)
	{
		uint64		seen = trust_invalidations;

		store = BuildTrustStore();
		if (seen == trust_invalidations || attempt >= 5)
			break;
		X509_STORE_free(store);
	}
	trust_store = store;
	/* under a transaction snapshot the rows may predate a change taken in: only for this transaction */
	if (IsolationUsesXactSnapshot())
	{
		X509_STORE_up_ref(store);
		RetireAtTransactionEnd(ForgetTrustStore, store);
	}
	return store;
}

/* BuildTrustStore - a new store from the tables (each read with a new snapshot) */
static X509_STORE *
BuildTrustStore(void)
{
	X509_STORE *store;
	Oid			nsp;
	int			ret;
	uint64		i;

	nsp = get_namespace_oid("interop", false);
	trust_anchor_relid = get_relname_relid("trust_anchor", nsp);
	crl_relid = get_relname_relid("crl", nsp);
	ocsp_relid = get_relname_relid("ocsp_response", nsp);

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

		ret = SPI_execute("SELECT certificate FROM interop.trust_anchor", false, 0);
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

		ret = SPI_execute("SELECT crl FROM interop.crl", false, 0);
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
		/* the OCSP answers, checked against the anchors just loaded */
		OcspLoadInto(store);
		SPI_finish();
	}
	PG_CATCH();
	{
		X509_STORE_free(store);
		PG_RE_THROW();
	}
	PG_END_TRY();
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
	ocsp_revoked = NULL;
	ocsp_until = 0;
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

		SeenChain(verified);
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
		/* a status known from OCSP holds as long as its answer */
		if (ocsp_until != 0 && ocsp_until < *not_after)
			*not_after = ocsp_until;
	}
	X509_STORE_CTX_free(ctx);

	/*
	 * Revocation unknown: note the chain's distribution points so that the
	 * sync worker fetches them, but only once its signatures are known good
	 * (a URL from a forged certificate is not fetched).
	 */
	if (ok != 1 && err == X509_V_ERR_UNABLE_TO_GET_CRL)
	{
		X509_STORE_CTX *again = X509_STORE_CTX_new();

		if (again != NULL && X509_STORE_CTX_init(again, store, leaf, untrusted))
		{
			X509_VERIFY_PARAM_clear_flags(X509_STORE_CTX_get0_param(again),
										  X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
			if (X509_verify_cert(again) == 1)
				SeenChain(X509_STORE_CTX_get0_chain(again));
		}
		X509_STORE_CTX_free(again);
		ERR_clear_error();
	}
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
			case X509_V_ERR_UNABLE_TO_GET_CRL:
				{
					STACK_OF(DIST_POINT) *dps = X509_get_ext_d2i(bad ? bad : leaf, NID_crl_distribution_points, NULL, NULL);
					char	   *issuer = X509_NAME_oneline(X509_get_issuer_name(bad ? bad : leaf), NULL, 0);
					char	   *where = pstrdup("");
					char		responder[2048];
					bool		has_responder = OcspResponderUrl(bad ? bad : leaf, responder, sizeof(responder));

					for (int j = 0; j < sk_DIST_POINT_num(dps) && where[0] == '\0'; j++)
					{
						DIST_POINT *dp = sk_DIST_POINT_value(dps, j);
						GENERAL_NAMES *names = dp->distpoint && dp->distpoint->type == 0 ? dp->distpoint->name.fullname : NULL;

						for (int k = 0; k < sk_GENERAL_NAME_num(names); k++)
							if (sk_GENERAL_NAME_value(names, k)->type == GEN_URI)
							{
								where = pstrdup((const char *) ASN1_STRING_get0_data(sk_GENERAL_NAME_value(names, k)->d.uniformResourceIdentifier));
								break;
							}
					}
					sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
					ereport(ERROR,
							(errcode(ERRCODE_INTEROP_REVOCATION_UNKNOWN),
							 errmsg("revocation status of certificate \"%s\" is unknown", subject),
							 has_responder ?
							 errdetail("This node has no current revocation list of its issuer \"%s\" (chain depth %d)%s%s, "
									   "and no fresh OCSP answer (interop.ocsp_max_age %d s) from the responder it names, %s.",
									   issuer ? issuer : "(unknown)", depth, where[0] ? ", which publishes one at " : "", where,
									   interop_ocsp_max_age, responder) :
							 errdetail("This node has no current revocation list of its issuer \"%s\" (chain depth %d), which publishes one%s%s.",
									   issuer ? issuer : "(unknown)", depth, where[0] ? " at " : "", where),
							 has_responder ?
							 errhint("The sync worker asks the responder about every certificate it has seen and keeps the answers in interop.ocsp_response "
									 "(see last_error there); or accept unknown status with interop.revocation_check = best_effort.") :
							 errhint("The sync worker fetches revocation lists from the distribution points it sees, every interop.sync_interval; "
									 "install one now with interop.add_crl(), or accept unknown status with interop.revocation_check = best_effort.")));
					OPENSSL_free(issuer);
				}
				break;
			case X509_V_ERR_CERT_REVOKED:
				if (ocsp_revoked != NULL)
					ereport(ERROR,
							(errcode(ERRCODE_INTEROP_CERTIFICATE_REVOKED),
							 errmsg("certificate has been revoked"),
							 errdetail("Certificate \"%s\" (chain depth %d) was revoked at %s, as its OCSP responder answered.",
									   subject, depth,
									   ocsp_revoked->revoked_at ? timestamptz_to_str(time_t_to_timestamptz(ocsp_revoked->revoked_at)) : "(unknown)")));
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

/*
 * VerifyChainKnownRevocation - VerifyChain where an unknown revocation
 * status is no reason to refuse: for the node's own chain when it is
 * installed, and for a CA whose CRL is being installed.  Before either,
 * the node cannot have fetched the CRLs that those chains name.
 */
void
VerifyChainKnownRevocation(STACK_OF(X509) *chain, time_t *not_before, time_t *not_after)
{
	time_t		nb,
				na;

	revocation_unknown_ok = true;
	PG_TRY();
	{
		(void) VerifyChainWindow(chain, not_before ? not_before : &nb, not_after ? not_after : &na);
	}
	PG_FINALLY();
	{
		revocation_unknown_ok = false;
	}
	PG_END_TRY();
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
char *
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

	RefuseOnStandby("interop.add_trust_anchor()");

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
 * CrlIssuerKnown - a CA that signed the CRL and chains to a trust anchor,
 * among the intermediates this node knows: those of its own chain and
 * those of the chains its workers have verified (interop.ca_certificate).
 * Intermediates are usually not anchors, and their CRLs are the ones that
 * change.  NULL when none.
 */
static X509 *
CrlIssuerKnown(X509_CRL *crl)
{
	int			ret;
	STACK_OF(X509) *known = sk_X509_new_null();
	MemoryContext outer = CurrentMemoryContext;
	List	   *pems = NIL;
	ListCell   *lc;

	if (known == NULL)
		OpenSSLError(ERRCODE_OUT_OF_MEMORY, "out of memory", NULL);
	OwnX509Stack(known);
	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
	ret = SPI_execute("SELECT certificate_chain FROM interop.node WHERE certificate_chain IS NOT NULL "
					  "UNION ALL SELECT certificate FROM interop.ca_certificate", false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read the known certificates: %s", SPI_result_code_string(ret));
	for (uint64 i = 0; i < SPI_processed; i++)
		pems = lappend(pems, MemoryContextStrdup(outer, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1)));
	SPI_finish();
	foreach(lc, pems)
	{
		STACK_OF(X509) *certs = ParseCertificatesPEM(lfirst(lc), "known certificate");

		for (int i = 0; i < sk_X509_num(certs); i++)
		{
			X509_up_ref(sk_X509_value(certs, i));
			sk_X509_push(known, sk_X509_value(certs, i));
		}
	}
	for (int i = 0; i < sk_X509_num(known); i++)
	{
		X509	   *c = sk_X509_value(known, i);
		EVP_PKEY   *k = X509_get0_pubkey(c);

		if (X509_NAME_cmp(X509_get_subject_name(c), X509_CRL_get_issuer(crl)) == 0 &&
			k && X509_CRL_verify(crl, k) == 1)
		{
			STACK_OF(X509) *up = sk_X509_new_null();

			/* the issuer first, every known certificate as a possible intermediate */
			OwnX509Stack(up);
			X509_up_ref(c);
			sk_X509_push(up, c);
			for (int j = 0; j < sk_X509_num(known); j++)
				if (j != i)
				{
					X509_up_ref(sk_X509_value(known, j));
					sk_X509_push(up, sk_X509_value(known, j));
				}
			VerifyChainKnownRevocation(up, NULL, NULL);	/* an ERROR unless it reaches an anchor */
			X509_up_ref(c);
			OwnX509(c);
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
		issuer = CrlIssuerKnown(crl);
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
				 errmsg("certificate revocation list is not signed by a CA this node trusts"),
				 errdetail("Neither a trust anchor nor a known CA that chains to one is named \"%s\" with a key that verifies this CRL.",
						   issuer_name),
				 errhint("A CRL of an intermediate CA is accepted once a chain through that CA has been seen (interop.ca_certificate), "
						 "or add the CA's root with interop.add_trust_anchor().")));
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
		urls = CertificateCdps(sk_X509_value(certs, i), urls);
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
	char	   *pem;
	BIO		   *bio;
	X509_CRL   *crl;

	RefuseOnStandby("interop.add_crl()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the revocation list must not be null")));
	pem = text_to_cstring(PG_GETARG_TEXT_PP(0));

	/* the issuing CA, with what lies between it and an anchor: known from now on */
	if (!PG_ARGISNULL(1))
	{
		STACK_OF(X509) *chain = ParseCertificatesPEM(text_to_cstring(PG_GETARG_TEXT_PP(1)), "CA certificate");
		int			ret;

		VerifyChainKnownRevocation(chain, NULL, NULL);	/* an ERROR unless it reaches an anchor */
		if ((ret = SPI_connect()) != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
		for (int i = 0; i < sk_X509_num(chain); i++)
		{
			X509	   *c = sk_X509_value(chain, i);

			if (X509_check_ca(c) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("certificate \"%s\" is not a CA certificate", CertificateSubject(c)),
						 errhint("Pass the certificate of the CA that issued the revocation list, and the CAs above it.")));
			RecordCaCertificate(c);
		}
		SPI_finish();
	}

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
