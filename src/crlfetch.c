/*-------------------------------------------------------------------------
 *
 * crlfetch.c
 *	  Revocation lists fetched from their distribution points by the sync
 *	  worker (a kind of src/transfer.c).
 *
 * The sources are in interop.crl_source: the http:// distribution points
 * named by the trust anchors and the node's certificate chain (looked for
 * every interop.sync_interval and whenever either changes), and those
 * named by chains the workers have verified (src/x509.c,
 * RecordSeenCertificates).  A CRL is signed, so it comes over plain HTTP;
 * each fetched one (DER or PEM) is installed as add_crl() installs one
 * (src/x509.c, InstallCrl), which checks its signature.  A fetch that fails
 * is recorded and tried again after 5 s, doubling up to an hour; the
 * installed CRL stays.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include <openssl/err.h>
#include <openssl/pem.h>

/* RecordCrl - the outcome of a CRL fetch; a failure backs off like a catalog's */
static void
RecordCrl(Transfer *t, const char *error)
{
	Datum		values[3];
	char		nulls[4] = "   ";
	Oid			types[3] = {TEXTOID, TEXTOID, INT4OID};

	values[0] = CStringGetTextDatum(t->url);
	values[1] = error ? CStringGetTextDatum(error) : (Datum) 0;
	nulls[1] = error ? ' ' : 'n';
	values[2] = Int32GetDatum(interop_sync_interval);
	if (SPI_execute_with_args(error ?
							  "UPDATE interop.crl_source SET checked_at = pg_catalog.clock_timestamp(), "
							  "failures = failures + 1, last_error = $2, next_fetch = pg_catalog.clock_timestamp() + "
							  "least(3600, 5 * 2 ^ least(failures + 1, 12)) * interval '1 s' WHERE url = $1 AND $3 IS NOT NULL" :
							  "UPDATE interop.crl_source SET checked_at = pg_catalog.clock_timestamp(), "
							  "fetched_at = pg_catalog.clock_timestamp(), failures = 0, last_error = $2, "
							  "next_fetch = pg_catalog.clock_timestamp() + $3 * interval '1 ms' WHERE url = $1",
							  3, types, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update interop.crl_source");
}

/* JudgeCrl - decode a fetched CRL (DER or PEM) and install it (may raise an ERROR) */
static void
JudgeCrl(Transfer *t)
{
	long		status;
	X509_CRL   *crl = NULL;

	if (t->rc != CURLE_OK)
	{
		RecordCrl(t, psprintf("could not fetch %s: %s", t->url, t->call.errbuf[0] ? t->call.errbuf : curl_easy_strerror(t->rc)));
		return;
	}
	status = TransferStatus(t);
	if (status != 200 || t->got.len == 0)
	{
		RecordCrl(t, psprintf("%s answered HTTP %ld", t->url, status));
		return;
	}
	if (memmem(t->got.data, t->got.len, "-----BEGIN X509 CRL-----", 24) != NULL)
	{
		BIO		   *bio = BIO_new_mem_buf(t->got.data, (int) t->got.len);

		crl = bio ? PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;
		BIO_free(bio);
	}
	else
	{
		const unsigned char *p = (const unsigned char *) t->got.data;

		crl = d2i_X509_CRL(NULL, &p, (long) t->got.len);
	}
	if (crl == NULL)
	{
		ERR_clear_error();
		RecordCrl(t, psprintf("%s did not answer with a CRL (DER or PEM)", t->url));
		return;
	}
	(void) InstallCrl(crl);
	RecordCrl(t, NULL);
}

/* FailCrl - the fetched CRL could not be installed */
static void
FailCrl(Transfer *t, ErrorData *edata)
{
	RecordCrl(t, edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message);
}

/*
 * StartCrls - record the CRL distribution points named by the trust anchors
 * and the node's chain (every sync_interval, and at once when either
 * changes), and claim free slots for the due ones
 */
static void
StartCrls(void)
{
	static TimestampTz last_discovery = 0;
	static uint64 discovered_generation = 0;
	TimestampTz now = GetCurrentTimestamp();
	SPITupleTable *tt;
	uint64		nrows;

	/* again at once when the anchors or the node's chain changed */
	if (last_discovery == 0 || now - last_discovery >= (int64) interop_sync_interval * 1000 ||
		discovered_generation != interop_identity_generation)
	{
		List	   *urls = NIL;
		ListCell   *lc;

		if (SPI_execute("SELECT certificate FROM interop.trust_anchor UNION ALL "
						"SELECT certificate_chain FROM interop.node WHERE certificate_chain IS NOT NULL",
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the certificates");
		tt = SPI_tuptable;
		for (uint64 r = 0; r < SPI_processed; r++)
			urls = CrlDistributionPoints(SPI_getvalue(tt->vals[r], tt->tupdesc, 1), urls);
		foreach(lc, urls)
			(void) RecordCrlSource(lfirst(lc));
		last_discovery = now;
		discovered_generation = interop_identity_generation;
	}

	nrows = DueOfKind(&crl_transfers,
					  "SELECT url FROM interop.crl_source WHERE next_fetch <= pg_catalog.clock_timestamp() "
					  "AND url <> ALL ($1) ORDER BY next_fetch LIMIT $2");
	tt = SPI_tuptable;
	for (uint64 r = 0; r < nrows; r++)
	{
		char	   *url = SPI_getvalue(tt->vals[r], tt->tupdesc, 1);
		MemoryContext old;

		if (ClaimTransfer(&crl_transfers, url, NULL, url, &old) == NULL)
			break;
		MemoryContextSwitchTo(old);
	}
}

const TransferKind crl_transfers = {
	.name = "revocation list",
	.start = StartCrls,
	.judge = JudgeCrl,
	.fail = FailCrl,
	.next_due = "(SELECT min(next_fetch) FROM interop.crl_source)"
};
