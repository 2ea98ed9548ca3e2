/*-------------------------------------------------------------------------
 *
 * ocsp.c
 *	  Revocation by OCSP, next to CRLs: the responses this node holds, the
 *	  check of a certificate against them, stapling, and their fetch by
 *	  the sync worker (a kind of src/transfer.c).
 *
 * A certificate whose authority information access names an OCSP
 * responder (http://) gets a row in interop.ocsp_response once a worker
 * has verified a chain that holds it (src/x509.c, SeenChain), or when it is
 * in the node's own chain.  The sync worker asks the responder about it
 * and stores the answer only after checking it: signed by the issuer or by
 * a responder the issuer delegated (OCSP signing usage) and chaining to a
 * trust anchor, about that very certificate, and current.  It asks again
 * when half of the answer's freshness is left: an answer is fresh until
 * its nextUpdate, and never longer than interop.ocsp_max_age after its
 * thisUpdate.  A fetch that fails is recorded and tried again after 5 s,
 * doubling up to an hour; the stored answer stays and counts until it is
 * no longer fresh.
 *
 * The trust store (src/x509.c, LoadTrustStore) carries the stored answers,
 * checked again as they are loaded, as ex_data of the X509_STORE: so the
 * TLS code, which holds the store past a transaction, sees the answers of
 * the store it verifies with, and nothing here runs SQL inside OpenSSL.
 * A certificate is revoked when a stored answer says so, fresh or not
 * (revocation is final), and its status is known when its issuer's CRL is
 * current or a fresh answer says good.
 *
 * Stapling: the gateway sends the node's own fresh answer in the TLS
 * handshake to a client that asks (status_request); interop's client asks,
 * and takes a stapled answer, checked the same way, for a server whose
 * status it does not know itself, and for the signatures of that server's
 * messages (OcspRememberStaple).
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

int			interop_ocsp_max_age = 3600;	/* s */

/* leeway for the clocks of the responder and this node, as OpenSSL's own tools take */
#define OCSP_CLOCK_SKEW 300

/* one checked answer, in the store's list (malloc'd: it lives as long as the store) */
typedef struct OcspEntry
{
	unsigned char fp[32];		/* SHA-256 of the certificate's DER */
	OcspVerdict v;
	unsigned char *der;			/* the answer, for stapling */
	int			der_len;
} OcspEntry;

typedef struct OcspList
{
	int			n;
	OcspEntry	e[FLEXIBLE_ARRAY_MEMBER];
} OcspList;

static int	ocsp_index = -1;

/* FreeOcspList - OpenSSL frees a store: the answers it carried */
static void
FreeOcspList(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	OcspList   *l = ptr;

	if (l == NULL)
		return;
	for (int i = 0; i < l->n; i++)
		free(l->e[i].der);
	free(l);
}

static int
OcspIndex(void)
{
	if (ocsp_index < 0)
		ocsp_index = X509_STORE_get_ex_new_index(0, NULL, NULL, NULL, FreeOcspList);
	return ocsp_index;
}

/* Asn1Time - seconds since the epoch of an ASN1_GENERALIZEDTIME (0: none) */
static time_t
Asn1Time(const ASN1_GENERALIZEDTIME *t)
{
	struct tm	tm;

	if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
		return 0;
	return timegm(&tm);
}

/* OcspResponderUrl - the first http:// OCSP responder a certificate names; false if none */
bool
OcspResponderUrl(X509 *cert, char *url, size_t size)
{
	STACK_OF(OPENSSL_STRING) *urls = cert ? X509_get1_ocsp(cert) : NULL;
	bool		found = false;

	for (int i = 0; i < sk_OPENSSL_STRING_num(urls) && !found; i++)
	{
		const char *u = sk_OPENSSL_STRING_value(urls, i);

		if (strlen(u) > 7 && strlen(u) < size && pg_strncasecmp(u, "http://", 7) == 0)
		{
			strlcpy(url, u, size);
			found = true;
		}
	}
	X509_email_free(urls);		/* frees a list of OPENSSL_STRING */
	return found;
}

/*
 * OcspResponderOnly - a certificate for signing OCSP answers and nothing
 * else, which says its own status is not to be checked (id-pkix-ocsp-nocheck):
 * its revocation status is not asked for (RFC 6960, 4.2.2.2.1)
 */
bool
OcspResponderOnly(X509 *cert)
{
	return X509_get_extended_key_usage(cert) == XKU_OCSP_SIGN &&
		X509_get_ext_by_NID(cert, NID_id_pkix_OCSP_noCheck, -1) >= 0;
}

/*
 * OcspFresh - whether a good or unknown answer still counts at now; until
 * is when it stops counting
 */
bool
OcspFresh(const OcspVerdict *v, time_t now, time_t *until)
{
	time_t		end = v->this_update + interop_ocsp_max_age;

	if (v->next_update != 0 && v->next_update < end)
		end = v->next_update;
	if (until)
		*until = end;
	return now <= end && v->this_update <= now + OCSP_CLOCK_SKEW;
}

/*
 * OcspCheckResponse - check an answer (DER) about cert, issued by issuer:
 * a successful response, signed by the issuer or a responder it delegated
 * that chains to a trust anchor of store, covering cert.  Fills *v and
 * returns true; else false with why in why[size].  No palloc, no ERROR:
 * it runs inside OpenSSL's and libcurl's callbacks too.
 */
bool
OcspCheckResponse(X509_STORE *store, const unsigned char *der, long len, X509 *cert, X509 *issuer,
				  OcspVerdict *v, char *why, size_t size)
{
	const unsigned char *p = der;
	OCSP_RESPONSE *resp = NULL;
	OCSP_BASICRESP *bs = NULL;
	STACK_OF(X509) *certs = NULL;
	bool		ok = false;
	int			rstatus;

	memset(v, 0, sizeof(*v));
	ERR_clear_error();
	resp = d2i_OCSP_RESPONSE(NULL, &p, len);
	if (resp == NULL || p != der + len)
	{
		strlcpy(why, "the answer is not a DER OCSP response", size);
		goto done;
	}
	rstatus = OCSP_response_status(resp);
	if (rstatus != OCSP_RESPONSE_STATUS_SUCCESSFUL)
	{
		snprintf(why, size, "the responder answered \"%s\"", OCSP_response_status_str(rstatus));
		goto done;
	}
	bs = OCSP_response_get1_basic(resp);
	certs = sk_X509_new_null();
	if (bs == NULL || certs == NULL || !sk_X509_push(certs, issuer))
	{
		strlcpy(why, "the response has no basic answer", size);
		goto done;
	}

	/*
	 * The signer: the issuer itself, or a certificate the issuer gave OCSP
	 * signing usage to, verified up to an anchor of the trust store
	 */
	if (OCSP_basic_verify(bs, certs, store, 0) != 1)
	{
		unsigned long e = ERR_peek_last_error();

		snprintf(why, size, "its signature or its signer could not be verified (%s)",
				 e ? ERR_reason_error_string(e) : "no reason given");
		goto done;
	}
	/* about this certificate: the answer for its id, by SHA-1 or SHA-256 */
	{
		const EVP_MD *mds[2] = {EVP_sha1(), EVP_sha256()};
		bool		found = false;

		for (int i = 0; i < 2 && !found; i++)
		{
			OCSP_CERTID *id = OCSP_cert_to_id(mds[i], cert, issuer);
			int			status,
						reason;
			ASN1_GENERALIZEDTIME *rev = NULL,
					   *thisupd = NULL,
					   *nextupd = NULL;

			if (id != NULL && OCSP_resp_find_status(bs, id, &status, &reason, &rev, &thisupd, &nextupd))
			{
				found = true;
				v->status = status;
				v->revoked_at = Asn1Time(rev);
				v->this_update = Asn1Time(thisupd);
				v->next_update = Asn1Time(nextupd);
				if (thisupd == NULL || v->this_update == 0)
				{
					OCSP_CERTID_free(id);
					strlcpy(why, "the answer has no usable thisUpdate", size);
					goto done;
				}
			}
			OCSP_CERTID_free(id);
		}
		if (!found)
		{
			strlcpy(why, "the response does not answer for this certificate", size);
			goto done;
		}
	}
	ok = true;

done:
	sk_X509_free(certs);
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(resp);
	ERR_clear_error();
	return ok;
}

/* CertDigest - SHA-256 of a certificate's DER */
static bool
CertDigest(X509 *cert, unsigned char *fp)
{
	unsigned int n;

	return cert != NULL && X509_digest(cert, EVP_sha256(), fp, &n) == 1 && n == 32;
}

/*
 * Answers stapled by servers this process called, checked (PeerStatus in
 * src/peerhttp.c): the answer of the server a call reached counts for
 * verifying the signatures of its messages too.  Forgotten with the trust
 * store they were checked against.
 */
#define STAPLES_KEPT 16
typedef struct Stapled
{
	unsigned char fp[32];
	OcspVerdict v;
} Stapled;
static Stapled staples[STAPLES_KEPT];
static int	staples_n = 0;
static int	staples_next = 0;

/* OcspRememberStaple - keep a checked stapled answer about cert */
void
OcspRememberStaple(X509 *cert, const OcspVerdict *v)
{
	unsigned char fp[32];
	int			slot = -1;

	if (!CertDigest(cert, fp))
		return;
	for (int i = 0; i < staples_n && slot < 0; i++)
		if (memcmp(staples[i].fp, fp, 32) == 0)
			slot = i;
	if (slot < 0)
	{
		slot = staples_n < STAPLES_KEPT ? staples_n++ : staples_next;
		staples_next = (slot + 1) % STAPLES_KEPT;
	}
	memcpy(staples[slot].fp, fp, 32);
	staples[slot].v = *v;
}

/* OcspForgetStaples - the trust store changed */
void
OcspForgetStaples(void)
{
	staples_n = staples_next = 0;
}

/*
 * OcspFind - the answer about cert: the one store carries, else one a
 * server stapled; NULL if none
 */
const OcspVerdict *
OcspFind(X509_STORE *store, X509 *cert)
{
	OcspList   *l = store && ocsp_index >= 0 ? X509_STORE_get_ex_data(store, ocsp_index) : NULL;
	unsigned char fp[32];

	if ((l == NULL || l->n == 0) && staples_n == 0)
		return NULL;
	if (!CertDigest(cert, fp))
		return NULL;
	for (int i = 0; l != NULL && i < l->n; i++)
		if (memcmp(l->e[i].fp, fp, 32) == 0)
			return &l->e[i].v;
	for (int i = 0; i < staples_n; i++)
		if (memcmp(staples[i].fp, fp, 32) == 0)
			return &staples[i].v;
	return NULL;
}

/*
 * OcspStaple - an OPENSSL_malloc'd copy of the answer about cert to staple:
 * a fresh good one, or one that says revoked; false if there is none
 */
bool
OcspStaple(X509_STORE *store, X509 *cert, unsigned char **der, int *len)
{
	OcspList   *l = store && ocsp_index >= 0 ? X509_STORE_get_ex_data(store, ocsp_index) : NULL;
	unsigned char fp[32];

	if (l == NULL || !CertDigest(cert, fp))
		return false;
	for (int i = 0; i < l->n; i++)
	{
		OcspEntry  *e = &l->e[i];

		if (memcmp(e->fp, fp, 32) != 0)
			continue;
		if (e->v.status != V_OCSP_CERTSTATUS_REVOKED &&
			!(e->v.status == V_OCSP_CERTSTATUS_GOOD && OcspFresh(&e->v, time(NULL), NULL)))
			return false;
		*der = OPENSSL_malloc(e->der_len);
		if (*der == NULL)
			return false;
		memcpy(*der, e->der, e->der_len);
		*len = e->der_len;
		return true;
	}
	return false;
}

/*
 * OcspLoadInto - the stored answers, each checked again, as ex_data of a
 * trust store being built (its anchors and CRLs are in); connected to SPI.
 * An answer that no longer checks (its signer expired, its anchor was
 * removed) is left out, with a LOG line.
 */
void
OcspLoadInto(X509_STORE *store)
{
	OcspList   *l;
	uint64		n;

	if (SPI_execute("SELECT fingerprint, certificate, issuer, response FROM interop.ocsp_response "
					"WHERE response IS NOT NULL", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.ocsp_response");
	n = SPI_processed;
	l = malloc(offsetof(OcspList, e) + sizeof(OcspEntry) * Max(n, 1));
	if (l == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	l->n = 0;
	if (!X509_STORE_set_ex_data(store, OcspIndex(), l))
	{
		free(l);
		OpenSSLError(ERRCODE_OUT_OF_MEMORY, "out of memory", NULL);
	}
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		bytea	   *resp = DatumGetByteaPP(SPI_getbinval(tup, desc, 4, &isnull));
		STACK_OF(X509) *cert = ParseCertificatesPEM(SPI_getvalue(tup, desc, 2), "certificate");
		STACK_OF(X509) *issuer = ParseCertificatesPEM(SPI_getvalue(tup, desc, 3), "certificate");
		OcspEntry  *e = &l->e[l->n];
		char		why[256];

		if (!CertDigest(sk_X509_value(cert, 0), e->fp) ||
			!OcspCheckResponse(store, (unsigned char *) VARDATA_ANY(resp), VARSIZE_ANY_EXHDR(resp),
							   sk_X509_value(cert, 0), sk_X509_value(issuer, 0), &e->v, why, sizeof(why)))
		{
			elog(LOG, "interop: the stored OCSP answer about certificate %s is left out: %s",
				 SPI_getvalue(tup, desc, 1), why);
			continue;
		}
		e->der_len = VARSIZE_ANY_EXHDR(resp);
		e->der = malloc(e->der_len);
		if (e->der == NULL)
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
		memcpy(e->der, VARDATA_ANY(resp), e->der_len);
		l->n++;
	}
}

/*
 * RecordOcspSubject - a certificate to ask cert's responder about; whether
 * it is new.  Connected to SPI.
 */
bool
RecordOcspSubject(X509 *cert, X509 *issuer, const char *url)
{
	Datum		values[5];
	Oid			types[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};

	values[0] = CStringGetTextDatum(CertificateFingerprint(cert));
	values[1] = CStringGetTextDatum(CertificateSubject(cert));
	values[2] = CStringGetTextDatum(CertificatePEM(cert));
	values[3] = CStringGetTextDatum(CertificatePEM(issuer));
	values[4] = CStringGetTextDatum(url);
	if (SPI_execute_with_args("INSERT INTO interop.ocsp_response (fingerprint, subject, certificate, issuer, responder) "
							  "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
							  5, types, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write interop.ocsp_response");
	return SPI_processed > 0;
}

/* ---- the fetch, a kind of transfer ---- */

typedef struct OcspAsk
{
	X509	   *cert;
	X509	   *issuer;
} OcspAsk;

/* RecordOcspFailure - a fetch that failed; backs off, the stored answer stays */
static void
RecordOcspFailure(Transfer *t, const char *error)
{
	Datum		values[2];
	Oid			types[2] = {TEXTOID, TEXTOID};

	values[0] = CStringGetTextDatum(t->name);
	values[1] = CStringGetTextDatum(error);
	if (SPI_execute_with_args("UPDATE interop.ocsp_response SET checked_at = pg_catalog.clock_timestamp(), "
							  "failures = failures + 1, last_error = $2, next_fetch = pg_catalog.clock_timestamp() + "
							  "least(3600, 5 * 2 ^ least(failures + 1, 12)) * interval '1 s' WHERE fingerprint = $1",
							  2, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update interop.ocsp_response");
}

/* TimestampOf - a time_t as a timestamptz Datum, NULL for 0 */
static Datum
TimestampOf(time_t t, char *null)
{
	*null = t == 0 ? 'n' : ' ';
	return TimestampTzGetDatum(time_t_to_timestamptz(t));
}

/* JudgeOcsp - check a fetched answer and store it (may raise an ERROR) */
static void
JudgeOcsp(Transfer *t)
{
	OcspAsk    *ask = t->data;
	OcspVerdict v;
	char		why[256];
	long		status;
	time_t		now = time(NULL);
	time_t		until;
	Datum		values[7];
	char		nulls[8] = "       ";
	Oid			types[7] = {TEXTOID, BYTEAOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID,
	TIMESTAMPTZOID};
	bytea	   *der;

	if (t->rc != CURLE_OK)
	{
		RecordOcspFailure(t, psprintf("could not reach the OCSP responder %s: %s", t->url,
									  t->call.errbuf[0] ? t->call.errbuf : curl_easy_strerror(t->rc)));
		return;
	}
	status = TransferStatus(t);
	if (status != 200 || t->got.len == 0)
	{
		RecordOcspFailure(t, psprintf("the OCSP responder %s answered HTTP %ld", t->url, status));
		return;
	}
	if (!OcspCheckResponse(LoadTrustStore(), (unsigned char *) t->got.data, (long) t->got.len,
						   ask->cert, ask->issuer, &v, why, sizeof(why)))
	{
		RecordOcspFailure(t, psprintf("the answer of the OCSP responder %s was refused: %s", t->url, why));
		return;
	}
	if (v.status != V_OCSP_CERTSTATUS_REVOKED && !OcspFresh(&v, now, &until))
	{
		RecordOcspFailure(t, psprintf("the answer of the OCSP responder %s was refused: it is not current "
									  "(thisUpdate %s, nextUpdate %s, interop.ocsp_max_age %d s)",
									  t->url, timestamptz_to_str(time_t_to_timestamptz(v.this_update)),
									  v.next_update ? timestamptz_to_str(time_t_to_timestamptz(v.next_update)) : "none",
									  interop_ocsp_max_age));
		return;
	}
	if (v.status == V_OCSP_CERTSTATUS_REVOKED)
		until = now + 2 * interop_ocsp_max_age;	/* final: asked again only to keep it current */
	der = palloc(VARHDRSZ + t->got.len);
	SET_VARSIZE(der, VARHDRSZ + t->got.len);
	memcpy(VARDATA(der), t->got.data, t->got.len);
	values[0] = CStringGetTextDatum(t->name);
	values[1] = PointerGetDatum(der);
	values[2] = CStringGetTextDatum(v.status == V_OCSP_CERTSTATUS_GOOD ? "good" :
									v.status == V_OCSP_CERTSTATUS_REVOKED ? "revoked" : "unknown");
	values[3] = TimestampOf(v.revoked_at, &nulls[3]);
	values[4] = TimestampOf(v.this_update, &nulls[4]);
	values[5] = TimestampOf(v.next_update, &nulls[5]);
	/* asked again when half of its freshness is left, at least a second on */
	values[6] = TimestampOf(now + Max(1, (until - now) / 2), &nulls[6]);
	if (SPI_execute_with_args("UPDATE interop.ocsp_response SET response = $2, status = $3, revoked_at = $4, "
							  "this_update = $5, next_update = $6, fetched_at = pg_catalog.clock_timestamp(), "
							  "checked_at = pg_catalog.clock_timestamp(), failures = 0, last_error = NULL, "
							  "next_fetch = $7 WHERE fingerprint = $1",
							  7, types, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update interop.ocsp_response");
}

/* FailOcsp - the fetched answer could not be stored */
static void
FailOcsp(Transfer *t, ErrorData *edata)
{
	RecordOcspFailure(t, edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message);
}

/* FreeAsk - a transfer's certificates, when its memory goes */
static void
FreeAsk(void *arg)
{
	OcspAsk    *ask = arg;

	X509_free(ask->cert);
	X509_free(ask->issuer);
}

/*
 * StartOcsp - record the node's own chain (every sync_interval, and at once
 * when it changes), and claim free slots for the due answers: each an
 * OCSP request (DER, no nonce: an answer is for stapling too) POSTed to the
 * responder
 */
static void
StartOcsp(void)
{
	static TimestampTz last_discovery = 0;
	static uint64 discovered_generation = 0;
	TimestampTz now = GetCurrentTimestamp();
	SPITupleTable *tt;
	uint64		nrows;

	if (last_discovery == 0 || now - last_discovery >= (int64) interop_sync_interval * 1000 ||
		discovered_generation != interop_identity_generation)
	{
		if (SPI_execute("SELECT certificate_chain FROM interop.node WHERE certificate_chain IS NOT NULL",
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the node's certificate chain");
		if (SPI_processed > 0)
			RecordChainForOcsp(ParseCertificatesPEM(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
													"certificate chain"));
		last_discovery = now;
		discovered_generation = interop_identity_generation;
	}

	nrows = DueOfKind(&ocsp_transfers,
					  "SELECT fingerprint, responder, certificate, issuer FROM interop.ocsp_response "
					  "WHERE next_fetch <= pg_catalog.clock_timestamp() AND fingerprint <> ALL ($1) "
					  "ORDER BY next_fetch LIMIT $2");
	tt = SPI_tuptable;
	for (uint64 r = 0; r < nrows; r++)
	{
		HeapTuple	tup = tt->vals[r];
		MemoryContext old;
		Transfer   *t = ClaimTransfer(&ocsp_transfers, SPI_getvalue(tup, tt->tupdesc, 1), NULL,
									  SPI_getvalue(tup, tt->tupdesc, 2), &old);
		OcspAsk    *ask;
		OCSP_REQUEST *req;
		OCSP_CERTID *id;
		unsigned char *p = NULL;
		int			len;
		MemoryContextCallback *cb;

		if (t == NULL)
			break;
		ask = palloc0(sizeof(OcspAsk));
		cb = palloc(sizeof(MemoryContextCallback));
		cb->func = FreeAsk;
		cb->arg = ask;
		MemoryContextRegisterResetCallback(t->cxt, cb);
		t->data = ask;
		ask->cert = sk_X509_value(ParseCertificatesPEM(SPI_getvalue(tup, tt->tupdesc, 3), "certificate"), 0);
		ask->issuer = sk_X509_value(ParseCertificatesPEM(SPI_getvalue(tup, tt->tupdesc, 4), "certificate"), 0);
		X509_up_ref(ask->cert);
		X509_up_ref(ask->issuer);
		req = OCSP_REQUEST_new();
		id = OCSP_cert_to_id(EVP_sha1(), ask->cert, ask->issuer);
		if (req != NULL && id != NULL && OCSP_request_add0_id(req, id) != NULL)
			id = NULL;			/* the request's now */
		len = req != NULL && id == NULL ? i2d_OCSP_REQUEST(req, &p) : 0;
		OCSP_CERTID_free(id);
		if (len <= 0)
		{
			OCSP_REQUEST_free(req);
			OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not make an OCSP request", NULL);
		}
		t->request = palloc(len);
		memcpy(t->request, p, len);
		t->request_len = len;
		t->content_type = "application/ocsp-request";
		OPENSSL_free(p);
		OCSP_REQUEST_free(req);
		MemoryContextSwitchTo(old);
	}
}

const TransferKind ocsp_transfers = {
	.name = "OCSP answer",
	.start = StartOcsp,
	.judge = JudgeOcsp,
	.fail = FailOcsp,
	.next_due = "(SELECT min(next_fetch) FROM interop.ocsp_response)"
};
