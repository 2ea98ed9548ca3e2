/*-------------------------------------------------------------------------
 *
 * tsa.c
 *	  Timestamps on seals from an RFC 3161 time-stamping authority: their
 *	  fetch by the sync worker (a kind of src/transfer.c), their check, the
 *	  gap the gateway refuses to answer past, and their metrics.
 *
 * With interop.tsa_url set, the sync worker asks the TSA for a token over
 * the newest seal once it is made: the token's message imprint is the
 * SHA-256 of that seal's JWS.  Every seal names the SHA-256 of the JWS
 * before it, so one token vouches for the whole chain up to its seal: the
 * TSA is asked once per sealing round of a node (interop.seal_interval),
 * however many records the round sealed.  A token is stored, in
 * interop.seal_timestamp, only after it is checked: granted, for this
 * request (imprint and nonce), signed by a certificate for time stamping
 * that chains to a trust anchor.  A fetch that fails is recorded in
 * interop.tsa_status and tried again after 5 s, doubling up to 10 minutes.
 *
 * The gap is the time since the oldest seal that no token covers was made
 * (or since timestamping was turned on, when later).  Past
 * interop.max_timestamp_gap the gateway answers queries and pages of
 * changes with 503 not_timestamped, as an X-Road security server stops
 * exchanging when its message log cannot be timestamped: an exchange that
 * the node cannot prove later must not happen.  The sync worker publishes
 * the oldest uncovered seal in shared memory (src/stats.c) after each
 * sealing round and each fetch, so the gateway's check reads no table.
 *
 * interop.verify_log() checks each token again (TsaCheckToken) and names a
 * seal that was timestamped much later than it claims to have been made:
 * one rewritten with the node key by somebody who also removed its token
 * can get a new token, but never one dated in the past.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ts.h>
#include <openssl/x509v3.h>

char	   *interop_tsa_url = NULL;
int			interop_max_timestamp_gap = 14400;	/* s */

/* OpenSSL 3.4 renamed the setters of a verification context; both take ownership */
#if OPENSSL_VERSION_NUMBER >= 0x30400000L
#define TsVerifySetStore(ctx, s) TS_VERIFY_CTX_set0_store((ctx), (s))
#define TsVerifySetImprint(ctx, p, n) TS_VERIFY_CTX_set0_imprint((ctx), (p), (n))
#else
#define TsVerifySetStore(ctx, s) TS_VERIFY_CTX_set_store((ctx), (s))
#define TsVerifySetImprint(ctx, p, n) TS_VERIFY_CTX_set_imprint((ctx), (p), (n))
#endif

/* TimestampingOn - whether seals are timestamped (interop.tsa_url is set) */
bool
TimestampingOn(void)
{
	return interop_tsa_url != NULL && interop_tsa_url[0] != '\0';
}

/* GeneralizedTime - an ASN.1 time as a timestamptz (0 when it cannot be read) */
static TimestampTz
GeneralizedTime(const ASN1_GENERALIZEDTIME *t)
{
	struct tm	tm;
	int			day,
				sec;
	ASN1_TIME  *epoch;
	TimestampTz result;

	if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
		return 0;
	/* seconds since the Unix epoch, without the local time zone */
	epoch = ASN1_TIME_set(NULL, 0);
	if (epoch == NULL || !ASN1_TIME_diff(&day, &sec, epoch, t))
	{
		ASN1_TIME_free(epoch);
		return 0;
	}
	ASN1_TIME_free(epoch);
	result = time_t_to_timestamptz((pg_time_t) ((int64) day * 86400 + sec));
	/* RFC 3161 allows fractions of a second; they add nothing here */
	return result;
}

/* SignerSubject - the subject of the certificate that signed a token, or NULL */
static char *
SignerSubject(PKCS7 *token)
{
	STACK_OF(X509) *signers = PKCS7_get0_signers(token, NULL, 0);
	char	   *subject = NULL;

	ERR_clear_error();
	if (signers != NULL && sk_X509_num(signers) > 0)
		subject = CertificateSubject(sk_X509_value(signers, 0));
	sk_X509_free(signers);
	return subject;
}

/*
 * TsaCheckToken - whether a time-stamp token (the DER of its ContentInfo)
 * is over digest (SHA-256, 32 bytes), signed by a certificate for time
 * stamping that chains to a trust anchor of store.  Sets *gen_time and
 * *tsa (the signer's subject); else why says what is wrong.  *imprint_ok
 * tells a token over something else from one that fails otherwise.
 */
bool
TsaCheckToken(X509_STORE *store, const unsigned char *der, long len, const unsigned char *digest,
			  TimestampTz *gen_time, char **tsa, bool *imprint_ok, char *why, size_t size)
{
	const unsigned char *p = der;
	PKCS7	   *token = d2i_PKCS7(NULL, &p, len);
	TS_TST_INFO *info = NULL;
	TS_VERIFY_CTX *ctx = NULL;
	bool		ok = false;

	*imprint_ok = false;
	*gen_time = 0;
	*tsa = NULL;
	ERR_clear_error();
	if (token == NULL || p != der + len || (info = PKCS7_to_TS_TST_INFO(token)) == NULL)
	{
		snprintf(why, size, "it is not a time-stamp token");
		goto done;
	}
	{
		TS_MSG_IMPRINT *mi = TS_TST_INFO_get_msg_imprint(info);
		X509_ALGOR *alg = TS_MSG_IMPRINT_get_algo(mi);
		ASN1_OCTET_STRING *msg = TS_MSG_IMPRINT_get_msg(mi);

		if (OBJ_obj2nid(alg->algorithm) != NID_sha256 || ASN1_STRING_length(msg) != 32 ||
			memcmp(ASN1_STRING_get0_data(msg), digest, 32) != 0)
		{
			snprintf(why, size, "it is a timestamp of other content");
			goto done;
		}
	}
	*imprint_ok = true;
	*gen_time = GeneralizedTime(TS_TST_INFO_get_time(info));
	*tsa = SignerSubject(token);

	ctx = TS_VERIFY_CTX_new();
	if (ctx == NULL || !X509_STORE_up_ref(store))
	{
		snprintf(why, size, "out of memory");
		goto done;
	}
	TsVerifySetStore(ctx, store);
	TS_VERIFY_CTX_set_flags(ctx, TS_VFY_VERSION | TS_VFY_SIGNATURE);
	if (TS_RESP_verify_token(ctx, token) != 1)
	{
		snprintf(why, size, "its signature or certificate does not verify: %s", OpenSSLErrorText());
		goto done;
	}
	if (*gen_time == 0)
	{
		snprintf(why, size, "its time cannot be read");
		goto done;
	}
	ok = true;
done:
	TS_VERIFY_CTX_free(ctx);
	TS_TST_INFO_free(info);
	PKCS7_free(token);
	ERR_clear_error();
	return ok;
}

/* ---- the gap ---- */

/*
 * PublishTimestampState - the oldest seal that no token covers, in shared
 * memory for the gateway, and in *since (0: none, or timestamping is off).
 * Connected to SPI.
 */
void
PublishTimestampState(void)
{
	bool		isnull;
	Datum		d;
	TimestampTz since = 0;

	if (TimestampingOn())
	{
		if (SPI_execute("SELECT greatest((SELECT min(s.sealed_at) FROM interop.log_seal s "
						"WHERE s.id > coalesce((SELECT max(seal_id) FROM interop.seal_timestamp), 0)), "
						"CASE WHEN EXISTS (SELECT 1 FROM interop.log_seal s "
						"WHERE s.id > coalesce((SELECT max(seal_id) FROM interop.seal_timestamp), 0)) "
						"THEN (SELECT enabled_at FROM interop.tsa_status) END), "
						"(SELECT last_error FROM interop.tsa_status)", true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read interop.log_seal");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			since = DatumGetTimestampTz(d);
		NoteTimestampGap(since, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
	}
	else
		NoteTimestampGap(0, NULL);
}

/*
 * TimestampGapProblem - why the gateway must not answer an exchange now
 * (palloc'd), or NULL: with timestamping on and interop.max_timestamp_gap
 * above 0, a seal has waited longer than that for a timestamp.
 */
char *
TimestampGapProblem(void)
{
	TimestampTz since;
	char		why[256];
	long		secs;
	int			usecs;

	if (!TimestampingOn() || interop_max_timestamp_gap <= 0)
		return NULL;
	since = TimestampGapSince(why, sizeof(why));
	if (since == 0)
		return NULL;
	TimestampDifference(since, GetCurrentTimestamp(), &secs, &usecs);
	if (secs < interop_max_timestamp_gap)
		return NULL;
	return psprintf("no timestamp for %ld s: the seals since %s have none, and interop.max_timestamp_gap is %d s%s%s",
					secs, timestamptz_to_str(since), interop_max_timestamp_gap,
					why[0] ? "; the last request to the TSA failed: " : "", why);
}

/* ---- the fetch, a kind of transfer ---- */

/* RecordTsaFailure - a fetch that failed: counted, logged, and tried again later */
static void
RecordTsaFailure(Transfer *t, const char *error)
{
	Datum		values[1];
	Oid			types[1] = {TEXTOID};

	ereport(LOG,
			(errmsg("interop sync: could not timestamp seal %s: %s", t->name, error),
			 errhint("The exchanges stop after interop.max_timestamp_gap without a timestamp; see interop.tsa_status.")));
	values[0] = CStringGetTextDatum(error);
	if (SPI_execute_with_args("UPDATE interop.tsa_status SET failures = failures + 1, failed_total = failed_total + 1, "
							  "last_error = $1, last_failure_at = pg_catalog.clock_timestamp(), "
							  "next_attempt = pg_catalog.clock_timestamp() + "
							  "least(600, 5 * 2 ^ least(failures, 10)) * interval '1 s'",
							  1, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update interop.tsa_status");
	PublishTimestampState();
}

/* JudgeTsa - check a TSA's answer and store its token (may raise an ERROR) */
static void
JudgeTsa(Transfer *t)
{
	const unsigned char *p = (const unsigned char *) t->request;
	TS_REQ	   *req = NULL;
	TS_RESP    *resp = NULL;
	TS_VERIFY_CTX *ctx = NULL;
	PKCS7	   *token;
	unsigned char *der = NULL;
	int			len;
	long		status;
	char	   *error = NULL;
	X509_STORE *store;

	if (t->rc != CURLE_OK)
	{
		RecordTsaFailure(t, psprintf("could not reach the TSA %s: %s", t->url,
									 t->call.errbuf[0] ? t->call.errbuf : curl_easy_strerror(t->rc)));
		return;
	}
	status = TransferStatus(t);
	if (status != 200 || t->got.len == 0)
	{
		RecordTsaFailure(t, psprintf("the TSA %s answered HTTP %ld", t->url, status));
		return;
	}
	store = LoadTrustStore();
	ERR_clear_error();
	req = d2i_TS_REQ(NULL, &p, t->request_len);
	p = (const unsigned char *) t->got.data;
	resp = d2i_TS_RESP(NULL, &p, (long) t->got.len);
	if (req == NULL)
		elog(ERROR, "could not read back the request sent to the TSA");
	if (resp == NULL || p != (const unsigned char *) t->got.data + t->got.len)
		error = psprintf("the answer of the TSA %s is not a time-stamp response", t->url);
	else if ((ctx = TS_REQ_to_TS_VERIFY_CTX(req, NULL)) == NULL || !X509_STORE_up_ref(store))
		error = pstrdup("out of memory");
	else
	{
		TsVerifySetStore(ctx, store);
		/* granted, for this request (version, imprint, nonce), signed by a trusted TSA */
		TS_VERIFY_CTX_set_flags(ctx, TS_VFY_VERSION | TS_VFY_SIGNATURE | TS_VFY_IMPRINT | TS_VFY_NONCE);
		if (TS_RESP_verify_response(ctx, resp) != 1)
			error = psprintf("the answer of the TSA %s was refused: %s", t->url, OpenSSLErrorText());
	}
	if (error == NULL)
	{
		token = TS_RESP_get_token(resp);
		len = token ? i2d_PKCS7(token, &der) : 0;
		if (len <= 0)
			error = psprintf("the answer of the TSA %s holds no token", t->url);
	}
	TS_VERIFY_CTX_free(ctx);
	TS_REQ_free(req);
	TS_RESP_free(resp);
	ERR_clear_error();
	if (error != NULL)
	{
		RecordTsaFailure(t, error);
		return;
	}

	/* stored as checked again, as interop.verify_log() will */
	{
		unsigned char digest[32];
		TimestampTz gen_time;
		char	   *tsa;
		bool		imprint_ok;
		char		why[512];
		bytea	   *b = palloc(VARHDRSZ + len);
		Datum		values[5];
		Oid			types[5] = {INT8OID, BYTEAOID, TIMESTAMPTZOID, TEXTOID, TEXTOID};
		char		nulls[5] = "    ";

		memcpy(VARDATA(b), der, len);
		SET_VARSIZE(b, VARHDRSZ + len);
		OPENSSL_free(der);
		memcpy(digest, t->data, 32);
		if (!TsaCheckToken(store, (unsigned char *) VARDATA(b), len, digest, &gen_time, &tsa, &imprint_ok,
						   why, sizeof(why)))
		{
			RecordTsaFailure(t, psprintf("the token of the TSA %s was refused: %s", t->url, why));
			return;
		}
		values[0] = Int64GetDatum(pg_strtoint64(t->name));
		values[1] = PointerGetDatum(b);
		values[2] = TimestampTzGetDatum(gen_time);
		values[3] = tsa ? CStringGetTextDatum(tsa) : (Datum) 0;
		nulls[3] = tsa ? ' ' : 'n';
		values[4] = CStringGetTextDatum(t->url);
		if (SPI_execute_with_args("INSERT INTO interop.seal_timestamp (seal_id, token, gen_time, tsa, tsa_url) "
								  "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
								  5, types, values, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not write interop.seal_timestamp");
	}
	if (SPI_execute("UPDATE interop.tsa_status SET failures = 0, last_error = NULL, "
					"last_success_at = pg_catalog.clock_timestamp(), next_attempt = pg_catalog.clock_timestamp()",
					false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update interop.tsa_status");
	PublishTimestampState();
}

/* FailTsa - the token could not be stored */
static void
FailTsa(Transfer *t, ErrorData *edata)
{
	RecordTsaFailure(t, edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message);
}

/*
 * StartTsa - note when timestamping was turned on or off, and claim a slot
 * for the newest seal without a token, when the last failure's wait is
 * over: a time-stamp request (SHA-256 imprint of the seal's JWS, a nonce,
 * the TSA's certificate asked for) POSTed to interop.tsa_url.  One at a
 * time: the newest seal covers the ones before it.
 */
static void
StartTsa(void)
{
	SPITupleTable *tt;
	uint64		nrows;
	TS_REQ	   *req = NULL;
	TS_MSG_IMPRINT *mi = NULL;
	X509_ALGOR *alg = NULL;
	ASN1_INTEGER *nonce = NULL;
	unsigned char digest[32];
	unsigned char rnd[8];
	unsigned char *p = NULL;
	int			len = 0;
	char	   *jws;
	MemoryContext old;
	Transfer   *t;

	if (ExecuteCached(TimestampingOn() ?
					  "UPDATE interop.tsa_status SET enabled_at = pg_catalog.clock_timestamp(), "
					  "next_attempt = pg_catalog.clock_timestamp() WHERE enabled_at IS NULL" :
					  "UPDATE interop.tsa_status SET enabled_at = NULL, failures = 0, last_error = NULL "
					  "WHERE enabled_at IS NOT NULL", 0, NULL, NULL, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update interop.tsa_status");
	if (SPI_processed > 0)
		PublishTimestampState();
	if (!TimestampingOn())
		return;

	nrows = DueOfKind(&tsa_transfers,
					  "SELECT s.id::text, s.jws FROM interop.log_seal s, interop.tsa_status st "
					  "WHERE st.next_attempt <= pg_catalog.clock_timestamp() AND pg_catalog.cardinality($1) = 0 AND $2 > 0 "
					  "AND s.id > coalesce((SELECT max(seal_id) FROM interop.seal_timestamp), 0) "
					  "ORDER BY s.id DESC LIMIT 1");
	if (nrows == 0)
		return;
	tt = SPI_tuptable;
	t = ClaimTransfer(&tsa_transfers, SPI_getvalue(tt->vals[0], tt->tupdesc, 1), NULL, interop_tsa_url, &old);
	if (t == NULL)
		return;
	jws = SPI_getvalue(tt->vals[0], tt->tupdesc, 2);
	Sha256(jws, strlen(jws), digest);
	t->data = palloc(32);
	memcpy(t->data, digest, 32);

	ERR_clear_error();
	if (RAND_bytes(rnd, sizeof(rnd)) == 1 &&
		(req = TS_REQ_new()) != NULL && TS_REQ_set_version(req, 1) &&
		(mi = TS_MSG_IMPRINT_new()) != NULL && (alg = X509_ALGOR_new()) != NULL &&
		X509_ALGOR_set0(alg, OBJ_nid2obj(NID_sha256), V_ASN1_NULL, NULL) &&
		TS_MSG_IMPRINT_set_algo(mi, alg) && TS_MSG_IMPRINT_set_msg(mi, digest, sizeof(digest)) &&
		TS_REQ_set_msg_imprint(req, mi) &&
		(nonce = ASN1_INTEGER_new()) != NULL &&
		ASN1_INTEGER_set_uint64(nonce, ((uint64) rnd[0] << 56 | (uint64) rnd[1] << 48 | (uint64) rnd[2] << 40 |
										(uint64) rnd[3] << 32 | (uint64) rnd[4] << 24 | (uint64) rnd[5] << 16 |
										(uint64) rnd[6] << 8 | rnd[7]) >> 1) &&
		TS_REQ_set_nonce(req, nonce) && TS_REQ_set_cert_req(req, 1))
		len = i2d_TS_REQ(req, &p);
	X509_ALGOR_free(alg);
	TS_MSG_IMPRINT_free(mi);
	ASN1_INTEGER_free(nonce);
	TS_REQ_free(req);
	if (len <= 0)
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not make a time-stamp request", NULL);
	t->request = palloc(len);
	memcpy(t->request, p, len);
	t->request_len = len;
	t->content_type = "application/timestamp-query";
	OPENSSL_free(p);
	MemoryContextSwitchTo(old);
}

const TransferKind tsa_transfers = {
	.name = "timestamp",
	.start = StartTsa,
	.judge = JudgeTsa,
	.fail = FailTsa,
	/* due when a seal has no token and the wait after a failure is over */
	.next_due = "(SELECT st.next_attempt FROM interop.tsa_status st "
	"WHERE pg_catalog.current_setting('interop.tsa_url') <> '' "
	"AND EXISTS (SELECT 1 FROM interop.log_seal s "
	"WHERE s.id > coalesce((SELECT max(seal_id) FROM interop.seal_timestamp), 0)))"
};

/* ---- metrics ---- */

/* TimestampMetrics - the gauges and counter of timestamping; connected to SPI */
void
TimestampMetrics(StringInfo buf)
{
	char		why[256];
	TimestampTz since = TimestampingOn() ? TimestampGapSince(why, sizeof(why)) : 0;
	long		secs = 0;
	int			usecs = 0;

	if (since != 0)
		TimestampDifference(since, GetCurrentTimestamp(), &secs, &usecs);
	appendStringInfo(buf,
					 "# HELP interop_timestamp_gap_seconds Time since the oldest seal without a timestamp was made (0: every seal has one, or interop.tsa_url is not set).\n"
					 "# TYPE interop_timestamp_gap_seconds gauge\n"
					 "interop_timestamp_gap_seconds %.3f\n", secs + usecs / 1e6);
	if (SPI_execute("SELECT coalesce(extract(epoch FROM (SELECT max(gen_time) FROM interop.seal_timestamp)), 0)::float8, "
					"failed_total FROM interop.tsa_status", true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read interop.tsa_status");
	appendStringInfo(buf,
					 "# HELP interop_timestamp_last_token_timestamp_seconds The time in the newest timestamp token (Unix time; 0: none).\n"
					 "# TYPE interop_timestamp_last_token_timestamp_seconds gauge\n"
					 "interop_timestamp_last_token_timestamp_seconds %s\n"
					 "# HELP interop_timestamp_failures_total Requests to the TSA that failed or whose answer was refused.\n"
					 "# TYPE interop_timestamp_failures_total counter\n"
					 "interop_timestamp_failures_total %s\n",
					 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
					 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
}
