/*-------------------------------------------------------------------------
 *
 * transfer.c
 *	  The sync worker's transfer engine: the slots, the libcurl multi
 *	  handle, and the round that starts due work and harvests what has
 *	  finished.  What a transfer is for is its kind's business, one file
 *	  each, reached through a table of operations (TransferKind):
 *
 *	  async.c		 asynchronous queries (POST /v1/query, with retries)
 *	  catalog.c		 peers' catalogs (GET /v1/catalog, with ETags)
 *	  crlfetch.c	 revocation lists from distribution points (plain HTTP)
 *	  ocsp.c		 OCSP answers from responders (plain HTTP, signed)
 *	  tsa.c			 timestamps on seals from a TSA (plain HTTP, signed)
 *	  subscribe.c	 subscription pulls (POST /v1/changes)
 *
 * Each round of the worker (TransferRound):
 *
 *	1. harvest: for every finished transfer, its kind's judge() verifies the
 *	   answer and records the outcome, each in a subtransaction of its own
 *	   so that a bad answer fails only itself (fail() then records the
 *	   ERROR), all in one transaction; only after that commit are the
 *	   transfers ended;
 *	2. start: when work may be due (work was committed and the latch set, a
 *	   slot was freed, or a quarter second passed), each kind's start()
 *	   claims free slots for its due work in one transaction, and after its
 *	   commit the claimed transfers are sent.
 *
 * While transfers are in flight the worker waits on libcurl's sockets (at
 * most 10 ms at a time); otherwise it sleeps until the earliest work any
 * kind has due.  After an ERROR in a round, or a crash, the transfers in
 * memory are dropped (TransferReset) and what they carried is still in the
 * tables: it is sent again.  Each transfer's memory is a context of its
 * own, deleted when it ends.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

/* the kinds, in the order they are started each round */
static const TransferKind *const kinds[] = {
	&async_transfers, &catalog_transfers, &crl_transfers, &ocsp_transfers, &tsa_transfers,
	&witness_transfers, &subscription_transfers
};

static Transfer transfers[TRANSFER_SLOTS];
static CURLM *amulti = NULL;
static uint64 handles_generation = 0;

/* ResetHandles - drop the handles and their connections (none in flight) */
static void
ResetHandles(void)
{
	for (int i = 0; i < TRANSFER_SLOTS; i++)
	{
		if (transfers[i].easy)
			curl_easy_cleanup(transfers[i].easy);
		transfers[i].easy = NULL;
	}
	if (amulti)
		curl_multi_cleanup(amulti);
	amulti = NULL;
	PeerForgetConnections();
}

/*
 * PrepareTransfers - the multi handle and one easy handle per slot; dropped
 * and made again, once no transfer is in flight, after the trust store or
 * the node identity changed
 */
static void
PrepareTransfers(void)
{
	if (amulti != NULL && handles_generation != interop_identity_generation)
	{
		bool		idle = true;

		for (int i = 0; i < TRANSFER_SLOTS; i++)
			idle &= !transfers[i].busy;
		if (idle)
			ResetHandles();
	}
	if (amulti != NULL)
		return;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
		elog(ERROR, "could not initialise libcurl");
	amulti = curl_multi_init();
	if (amulti == NULL)
		elog(ERROR, "could not create a libcurl multi handle");
	for (int i = 0; i < TRANSFER_SLOTS; i++)
	{
		transfers[i].easy = curl_easy_init();
		if (transfers[i].easy == NULL)
			elog(ERROR, "could not create a libcurl handle");
		PeerEasySetup(transfers[i].easy, &transfers[i].call);
	}
	handles_generation = interop_identity_generation;
}

/* CatchEtag - libcurl header callback: keep the ETag */
static size_t
CatchEtag(char *buffer, size_t size, size_t nitems, void *userdata)
{
	Transfer   *t = userdata;
	size_t		n = size * nitems;

	if (n > 5 && pg_strncasecmp(buffer, "ETag:", 5) == 0)
	{
		size_t		start = 5;
		size_t		end = n;

		while (start < end && (buffer[start] == ' ' || buffer[start] == '\t'))
			start++;
		while (end > start && (buffer[end - 1] == '\r' || buffer[end - 1] == '\n' || buffer[end - 1] == ' '))
			end--;
		if (end - start < sizeof(t->etag_got))
		{
			memcpy(t->etag_got, buffer + start, end - start);
			t->etag_got[end - start] = '\0';
		}
	}
	return n;
}

/*
 * ClaimTransfer - a free slot for a transfer of kind to url; name is what
 * the kind's due query knows it by, member the member id the TLS peer must
 * be (NULL: plain HTTP, no member).  Its memory is the slot's context,
 * current on return (switch back with MemoryContextSwitchTo of the value
 * *old is set to).  NULL when no slot is free.
 */
Transfer *
ClaimTransfer(const TransferKind *kind, const char *name, const char *member, const char *url,
			  MemoryContext *old)
{
	Transfer   *t = NULL;

	for (int i = 0; i < TRANSFER_SLOTS && t == NULL; i++)
		if (transfers[i].cxt == NULL)
			t = &transfers[i];
	if (t == NULL)
		return NULL;
	t->cxt = AllocSetContextCreate(TopMemoryContext, "interop transfer", ALLOCSET_SMALL_SIZES);
	*old = MemoryContextSwitchTo(t->cxt);
	t->kind = kind;
	t->name = pstrdup(name);
	t->member = member ? pstrdup(member) : NULL;
	t->url = pstrdup(url);
	t->request = NULL;
	t->request_len = 0;
	t->content_type = NULL;
	t->etag_sent = NULL;
	t->data = NULL;
	return t;
}

/* TransferStart - send a claimed transfer: its request, or a GET */
void
TransferStart(Transfer *t)
{
	PeerBodyReset(&t->got);
	t->finished = false;
	t->rc = CURLE_OK;
	t->started = GetCurrentTimestamp();
	t->etag_got[0] = '\0';
	t->headers = curl_slist_append(NULL, t->content_type ? "Accept: */*" : "Accept: application/jose");
	t->headers = curl_slist_append(t->headers, "Expect:");
	if (t->request)
		t->headers = curl_slist_append(t->headers, psprintf("Content-Type: %s",
															t->content_type ? t->content_type : "application/jose"));
	else if (t->etag_sent)
		t->headers = curl_slist_append(t->headers, psprintf("If-None-Match: %s", t->etag_sent));
	PeerCallBegin(t->easy, &t->call, t->member ? t->member : t->url, t->url);
	curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);
	curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, &t->got);
	curl_easy_setopt(t->easy, CURLOPT_HEADERFUNCTION, CatchEtag);
	curl_easy_setopt(t->easy, CURLOPT_HEADERDATA, t);
	/* a CRL or an OCSP answer is signed, and their sources are plain HTTP */
	curl_easy_setopt(t->easy, CURLOPT_PROTOCOLS_STR, t->member ? "https" : "http");
	if (t->request)
	{
		curl_easy_setopt(t->easy, CURLOPT_POST, 1L);
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, t->request);
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE,
						 (long) (t->request_len ? t->request_len : strlen(t->request)));
	}
	else
		curl_easy_setopt(t->easy, CURLOPT_HTTPGET, 1L);
	if (curl_multi_add_handle(amulti, t->easy) != CURLM_OK)
		elog(ERROR, "could not start a libcurl transfer");
	t->busy = true;
}

/*
 * TransferStartNow - send t at once, from inside a round (a subscription's
 * next page while one is applied).  On an ERROR the slot is freed: a
 * transfer claimed but not sent must not be sent later unsigned.
 */
void
TransferStartNow(Transfer *t, void (*prepare) (Transfer *t))
{
	int			running;

	PG_TRY();
	{
		PeerIdentityLoad();
		prepare(t);
		TransferStart(t);
	}
	PG_CATCH();
	{
		if (t->busy)
			curl_multi_remove_handle(amulti, t->easy);
		curl_slist_free_all(t->headers);
		t->headers = NULL;
		t->busy = false;
		MemoryContextDelete(t->cxt);
		t->cxt = NULL;
		PG_RE_THROW();
	}
	PG_END_TRY();
	curl_multi_perform(amulti, &running);
}

/* TransferEnd - free what a transfer held */
static void
TransferEnd(Transfer *t)
{
	curl_multi_remove_handle(amulti, t->easy);
	curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(t->headers);
	t->headers = NULL;
	PeerBodyReset(&t->got);
	MemoryContextDelete(t->cxt);
	t->cxt = NULL;
	t->busy = false;
	t->finished = false;
}

/* TransferStatus - the HTTP status of a finished transfer (0: none) */
long
TransferStatus(Transfer *t)
{
	long		status = 0;

	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
	return status;
}

/* TransferSigned - whether a finished transfer's answer is a JWS */
bool
TransferSigned(Transfer *t)
{
	char	   *ctype = NULL;

	curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ctype);
	return JoseMediaType(ctype);
}

/* TransferBody - the answer's bytes, palloc'd and terminated */
char *
TransferBody(Transfer *t)
{
	return pnstrdup(t->got.data ? t->got.data : "", t->got.len);
}

/* TransferFailure - why a transfer did not complete (t->rc is not CURLE_OK) */
PeerFailure
TransferFailure(Transfer *t)
{
	return PeerFailureOf(t->rc, t->url, &t->call, t->got.too_large);
}

/*
 * TransferLog - the consumer's message_log record of a request a transfer
 * sent (an asynchronous query, a subscription pull), and its count.  In the
 * transaction that records the outcome.
 */
void
TransferLog(Transfer *t, const TransferRequest *r, const char *subject, const char *response, long status,
			const char *error_code, const char *message, int row_count)
{
	ExchangeLog l;

	memset(&l, 0, sizeof(l));
	l.direction = "out";
	l.peer = t->member;
	l.service = r->service;
	l.purpose = r->purpose;
	l.subject = subject;
	l.jti = r->jti;
	l.request_hash = r->req_hash;
	l.request = t->request;
	l.response = response;
	l.status = (int) status;
	l.error_code = error_code;
	l.error_message = message;
	l.row_count = row_count;
	l.duration_ms = (double) (GetCurrentTimestamp() - t->started) / 1000.0;
	LogExchange(&l);
	CountExchange('p', t->member, (int) status, l.duration_ms, message);
}

/*
 * DueOfKind - run sql, which selects due work of one kind: $1 is the names
 * of that kind's transfers in flight, $2 how many slots are free.  Returns
 * the number of rows in SPI_tuptable; 0 when no slot is free.  Each kind's
 * statement is planned once, for any $1 and $2: it runs at every round
 * (for each finished transfer, when work is queued), and planning it anew
 * each time was a tenth of the sync worker delivering asynchronous queries.
 */
uint64
DueOfKind(const TransferKind *kind, const char *sql)
{
	Datum	   *busy = palloc(sizeof(Datum) * TRANSFER_SLOTS);
	int			nbusy = 0;
	int			nfree = 0;
	Datum		values[2];
	Oid			types[2] = {TEXTARRAYOID, INT4OID};

	for (int i = 0; i < TRANSFER_SLOTS; i++)
	{
		if (transfers[i].cxt == NULL)
			nfree++;
		else if (transfers[i].kind == kind)
			busy[nbusy++] = CStringGetTextDatum(transfers[i].name);
	}
	if (nfree == 0)
		return 0;
	values[0] = PointerGetDatum(construct_array(busy, nbusy, TEXTOID, -1, false, TYPALIGN_INT));
	values[1] = Int32GetDatum(nfree);
	if (ExecuteCachedPlan(sql, 2, types, values, NULL, false, 0, CURSOR_OPT_GENERIC_PLAN) != SPI_OK_SELECT)
		elog(ERROR, "could not look for due work: %s", sql);
	return SPI_processed;
}

/* HasIdentity - the node has a certificate to call peers with; connected to SPI */
bool
HasIdentity(void)
{
	return ExecuteCached("SELECT 1 FROM interop.node WHERE certificate_chain IS NOT NULL",
						 0, NULL, NULL, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed > 0;
}

/* JudgeAndRecord - one finished transfer, in a subtransaction of its own */
static void
JudgeAndRecord(Transfer *t)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		t->kind->judge(t);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		t->kind->fail(t, edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
}

/* Harvest - record the outcomes of the finished transfers; how many */
static int
Harvest(void)
{
	CURLMsg    *msg;
	int			left;
	int			n = 0;

	while ((msg = curl_multi_info_read(amulti, &left)) != NULL)
	{
		if (msg->msg != CURLMSG_DONE)
			continue;
		for (int i = 0; i < TRANSFER_SLOTS; i++)
			if (transfers[i].busy && transfers[i].easy == msg->easy_handle)
			{
				Transfer   *t = &transfers[i];

				t->finished = true;
				t->rc = msg->data.result;
				/* which of a peer's base URLs to try first next time */
				if (t->member == NULL)
					;			/* a CRL distribution point */
				else if (t->rc == CURLE_OK && TransferStatus(t) != 503)
					PeerUrlAnswered(t->member, t->url);
				else if (t->rc == CURLE_OK || (!t->call.mismatch && !t->got.too_large))
					PeerUrlFailed(t->member, t->url);
				n++;
			}
	}
	if (n == 0)
		return 0;

	BeginWorkerTransaction();
	for (int i = 0; i < TRANSFER_SLOTS; i++)
		if (transfers[i].busy && transfers[i].finished)
		{
			MemoryContext old = MemoryContextSwitchTo(transfers[i].cxt);

			JudgeAndRecord(&transfers[i]);
			MemoryContextSwitchTo(old);
		}
	EndWorkerTransaction();

	/* only now, with every outcome committed */
	for (int i = 0; i < TRANSFER_SLOTS; i++)
		if (transfers[i].busy && transfers[i].finished)
			TransferEnd(&transfers[i]);
	return n;
}

/*
 * StartDue - let every kind claim slots for its due work, in one
 * transaction (the kinds store what they will send before it commits),
 * then send them.  Returns how many started.
 */
static int
StartDue(void)
{
	int			nfree = 0;
	int			started = 0;

	for (int i = 0; i < TRANSFER_SLOTS; i++)
		if (transfers[i].cxt == NULL)
			nfree++;
	if (nfree == 0)
		return 0;

	BeginWorkerTransaction();
	for (int k = 0; k < lengthof(kinds); k++)
		kinds[k]->start();
	EndWorkerTransaction();

	for (int i = 0; i < TRANSFER_SLOTS; i++)
	{
		Transfer   *t = &transfers[i];

		if (t->busy || t->cxt == NULL)
			continue;
		TransferStart(t);
		started++;
	}
	return started;
}

/* NextDue - ms until the earliest due work of any kind, or -1 when none */
static int64
NextDue(void)
{
	StringInfoData sql;
	bool		isnull;
	Datum		d;
	int64		ms;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT (extract(epoch FROM least(");
	for (int k = 0; k < lengthof(kinds); k++)
		appendStringInfo(&sql, "%s%s", k ? ", " : "", kinds[k]->next_due);
	/* NULL when nothing is scheduled (greatest() would ignore it: "now") */
	appendStringInfoString(&sql, ") - pg_catalog.clock_timestamp()) * 1000)::bigint");
	BeginWorkerTransaction();
	if (ExecuteCached(sql.data, 0, NULL, NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look for due work");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	ms = isnull ? -1 : Max(10, DatumGetInt64(d));
	EndWorkerTransaction();
	return ms;
}

/*
 * TransferRound - one round of the engine; lowers *timeout (ms, -1: none)
 * to when the worker should look again.  woken: the latch was set (work
 * was committed) since the last round.
 */
void
TransferRound(long *timeout, bool woken)
{
	static TimestampTz next_look = 0;
	int			running = 0;
	int			active = 0;
	TimestampTz now;
	int64		ms;

	PrepareTransfers();
	curl_multi_perform(amulti, &running);

	/*
	 * Look for due work when there may be some: new work was committed (the
	 * latch), a slot was freed, or a quarter second passed (due retries,
	 * catalogs, CRLs).  Not at every turn while transfers are in flight.
	 */
	now = GetCurrentTimestamp();
	if (Harvest() > 0 || woken || now >= next_look)
	{
		next_look = TimestampTzPlusMilliseconds(now, 250);
		if (StartDue() > 0)
			curl_multi_perform(amulti, &running);
	}

	for (int i = 0; i < TRANSFER_SLOTS; i++)
		if (transfers[i].busy)
			active++;
	if (active > 0)
	{
		/* transfers in flight: let libcurl wait on its sockets for a while */
		curl_multi_poll(amulti, NULL, 0, 10, NULL);
		*timeout = 0;
		return;
	}

	/* nothing in flight: sleep until the next work is due */
	ms = NextDue();
	if (ms >= 0 && (*timeout < 0 || ms < *timeout))
		*timeout = (long) Min(ms, 60000);
	/* distribution points are looked for every sync_interval */
	if (*timeout < 0 || *timeout > interop_sync_interval)
		*timeout = interop_sync_interval;
}

/*
 * TransferReset - after an ERROR in a round: drop every transfer and
 * handle.  What they carried is still in the tables, and is sent again.
 */
void
TransferReset(void)
{
	for (int i = 0; i < TRANSFER_SLOTS; i++)
	{
		Transfer   *t = &transfers[i];

		if (t->busy && amulti != NULL)
			curl_multi_remove_handle(amulti, t->easy);
		curl_slist_free_all(t->headers);
		t->headers = NULL;
		PeerBodyReset(&t->got);
		if (t->cxt)
			MemoryContextDelete(t->cxt);
		t->cxt = NULL;
		t->busy = t->finished = false;
	}
	ResetHandles();
}
