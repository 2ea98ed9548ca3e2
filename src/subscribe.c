/*-------------------------------------------------------------------------
 *
 * subscribe.c
 *	  The consumer half of subscriptions: the sync worker's pulls of
 *	  POST /v1/changes (a kind of src/transfer.c), each batch applied into
 *	  the target with its cursor in one transaction.  The provider half is
 *	  src/changes.c; the SQL surface is src/subscribe.sql.
 *
 * For each subscription at most one pull is in flight, with a new jti and a
 * fresh signature (a pull is a read: a retry is a new request).  The
 * cursor is the provider's: stored as the batch's "next" and sent back
 * unchanged, never read here.  What the consumer needs to know of it the
 * batch says in claims of its own (src/protocol.c, CheckBatch): "phase",
 * whether the next pull is a page of the copy (applied with a plain
 * INSERT: its keys follow every key copied so far), "more" (pull again at
 * once), "complete" (everything the provider had committed is applied now:
 * only then is synced_at moved, which stat_subscription's lag reads).
 *
 * While one batch is applied the next is already asked for (PrefetchPull),
 * so the provider reads as the consumer writes.  The prefetched answer is
 * applied only if the batch before it was: the stored cursor must still be
 * the one it was asked with; otherwise it is logged as stale and dropped.
 * A crash before a batch's commit repeats the pull from the old cursor;
 * after it, the next pull starts from the new one.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/acl.h"
#include "utils/builtins.h"

/* what a subscription pull carries */
typedef struct SubscriptionPull
{
	TransferRequest req;
	int64		id;				/* the subscription */
	char	   *cursor;			/* the cursor sent (NULL: start) */
	bool		copy;			/* the cursor asks for a page of the copy */
	Oid			target;			/* the local table */
	char	   *owner;			/* the role that applies */
} SubscriptionPull;

/* a pull's result, for RecordPull */
typedef struct Pull
{
	const char *state;			/* done, expired (start a new copy), failed (retry
								 * later) or stale (prefetched, not applied) */
	long		status;
	const char *error_code;
	char	   *message;
	char	   *response;
	Batch		batch;			/* done: the batch's claims */
	int			nrows;			/* done: upserts + deletes */
} Pull;

/*
 * RecordPull - store the outcome of a pull with the subscription, and log
 * the exchange; in the transaction that applied the batch.  A failure
 * backs off from 0.5 s, doubling, to an hour, never sooner than "every".
 */
static void
RecordPull(Transfer *t, Pull *p)
{
	SubscriptionPull *s = t->data;
	bool		done = strcmp(p->state, "done") == 0;
	Datum		values[9];
	char		nulls[10] = "         ";
	Oid			types[9] = {INT8OID, TEXTOID, TEXTOID, INT4OID, BOOLOID, TEXTOID, TIMESTAMPTZOID, BOOLOID, BOOLOID};

	values[0] = Int64GetDatum(s->id);
	values[1] = CStringGetTextDatum(p->state);
	values[2] = done ? CStringGetTextDatum(p->batch.next) : (Datum) 0;
	nulls[2] = done ? ' ' : 'n';
	values[3] = Int32GetDatum(p->nrows);
	values[4] = BoolGetDatum(p->batch.more);
	values[5] = p->message ? CStringGetTextDatum(p->message) : (Datum) 0;
	nulls[5] = p->message ? ' ' : 'n';
	values[6] = TimestampTzGetDatum(t->started);
	values[7] = BoolGetDatum(p->batch.complete);
	values[8] = BoolGetDatum(p->batch.next_copy);
	if (strcmp(p->state, "stale") != 0 &&
		ExecuteCached("UPDATE interop.subscription SET "
					  "cursor = CASE $2 WHEN 'done' THEN $3::jsonb WHEN 'expired' THEN NULL ELSE cursor END, "
					  "phase = CASE $2 WHEN 'done' THEN CASE WHEN $9 THEN 'copy' ELSE 'sync' END "
					  "  WHEN 'expired' THEN 'copy' ELSE phase END, "
					  "rows_copied = CASE WHEN $2 = 'done' AND phase = 'copy' "
					  "  THEN CASE WHEN cursor IS NULL THEN 0 ELSE rows_copied END + $4 ELSE rows_copied END, "
					  "changes_applied = changes_applied + CASE WHEN $2 = 'done' AND phase = 'sync' THEN $4 ELSE 0 END, "
					  "batches = batches + CASE WHEN $2 = 'done' THEN 1 ELSE 0 END, "
					  "copy_started_at = CASE WHEN $2 = 'done' AND cursor IS NULL THEN $7 ELSE copy_started_at END, "
					  "copy_finished_at = CASE WHEN $2 = 'done' AND cursor IS NULL THEN NULL ELSE copy_finished_at END, "
					  "synced_at = CASE WHEN $2 = 'done' AND NOT $5 AND $8 THEN $7 ELSE synced_at END, "
					  "last_pull_at = pg_catalog.clock_timestamp(), "
					  "failures = CASE WHEN $2 = 'failed' THEN failures + 1 ELSE 0 END, "
					  "last_error = $6, "
					  "next_pull = pg_catalog.clock_timestamp() + CASE "
					  "  WHEN $2 = 'done' AND $5 THEN interval '0' WHEN $2 = 'done' THEN every "
					  "  WHEN $2 = 'expired' THEN interval '0' "
					  "  ELSE greatest(every, least(3600, 0.5 * 2 ^ least(failures, 13)) * interval '1 s') END "
					  "WHERE id = $1",
					  9, types, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update subscription " INT64_FORMAT, s->id);
	if (done &&
		ExecuteCached("UPDATE interop.subscription SET copy_finished_at = pg_catalog.clock_timestamp() "
					  "WHERE id = $1 AND phase = 'sync' AND copy_finished_at IS NULL",
					  1, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update subscription " INT64_FORMAT, s->id);

	TransferLog(t, &s->req, NULL, p->response, p->status, p->error_code, p->message, done ? p->nrows : -1);
}

/* SignPull - sign t's request for the changes after its cursor (NULL: from the start) */
static void
SignPull(Transfer *t)
{
	SubscriptionPull *s = t->data;
	MemoryContext old = MemoryContextSwitchTo(t->cxt);
	char	   *claims;

	s->req.jti = NewJti();
	claims = BuildRequest(t->member, s->req.service, "{}", s->req.purpose, s->req.jti,
						  Max(60, interop_request_timeout / 1000 + interop_max_clock_skew),
						  s->cursor ? s->cursor : "null");
	t->request = JwsSignJson(claims, strlen(claims), JWS_TYP_REQUEST);
	s->req.req_hash = Sha256Base64Url(t->request, strlen(t->request));
	MemoryContextSwitchTo(old);
}

/*
 * PrefetchPull - while batch t is applied, already ask for the one after
 * it, so that the provider reads the next page as this one is written.
 * Nothing when no slot is free.
 */
static void
PrefetchPull(Transfer *t, const Batch *b)
{
	SubscriptionPull *s = t->data;
	MemoryContext old;
	Transfer   *n = ClaimTransfer(&subscription_transfers, t->name, t->member, t->url, &old);
	SubscriptionPull *ns;

	if (n == NULL)
		return;
	ns = palloc0(sizeof(SubscriptionPull));
	n->data = ns;
	ns->id = s->id;
	ns->req.service = pstrdup(s->req.service);
	ns->req.purpose = s->req.purpose ? pstrdup(s->req.purpose) : NULL;
	ns->cursor = pstrdup(b->next);
	ns->copy = b->next_copy;
	ns->target = s->target;
	ns->owner = pstrdup(s->owner);
	MemoryContextSwitchTo(old);
	TransferStartNow(n, SignPull);
}

/*
 * JudgeSubscription - verify a batch and apply it with its cursor (may
 * raise an ERROR: the engine's subtransaction then rolls the batch back and
 * FailSubscription records the failure)
 */
static void
JudgeSubscription(Transfer *t)
{
	SubscriptionPull *s = t->data;
	Jsonb	   *payload;
	char	   *code;
	char	   *message;
	Pull		p;
	int64		applied;
	Oid			owner;
	Datum		curv[2];
	Oid			curt[2] = {INT8OID, TEXTOID};
	bool		isnull;

	memset(&p, 0, sizeof(p));
	p.state = "failed";

	/* unsubscribed meanwhile: nothing to apply */
	curv[0] = Int64GetDatum(s->id);
	curv[1] = s->cursor ? CStringGetTextDatum(s->cursor) : (Datum) 0;
	if (ExecuteCached("SELECT cursor IS NOT DISTINCT FROM $2::jsonb FROM interop.subscription "
					  "WHERE id = $1 FOR UPDATE",
					  2, curt, curv, s->cursor ? "  " : " n", false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read subscription " INT64_FORMAT, s->id);
	if (SPI_processed == 0)
		return;
	curv[0] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!DatumGetBool(curv[0]))
	{
		/* prefetched after a batch that was then not applied */
		p.state = "stale";
		p.status = TransferStatus(t);
		p.response = t->got.data ? TransferBody(t) : NULL;
		p.message = pstrdup("not applied: the batch before it was not applied");
		RecordPull(t, &p);
		return;
	}

	if (t->rc != CURLE_OK)
	{
		PeerFailure f = TransferFailure(t);

		p.error_code = unpack_sql_state(f.sqlstate);
		p.message = PeerFailureText(&f);
		RecordPull(t, &p);
		return;
	}
	p.status = TransferStatus(t);
	if (!TransferSigned(t))
	{
		p.error_code = "IX011";
		p.message = psprintf("peer %s answered HTTP %ld without a signed body", t->member, p.status);
		RecordPull(t, &p);
		return;
	}
	p.response = TransferBody(t);
	payload = CheckResponse(p.response, t->got.len, t->member, s->req.jti, s->req.req_hash, &code, &message);
	if (code != NULL)
	{
		p.state = p.status == 410 ? "expired" : "failed";
		p.error_code = psprintf("IX%03ld", p.status >= 400 && p.status <= 599 ? p.status : 500);
		p.message = psprintf("peer %s refused the changes of service \"%s\": %s: %s",
							 t->member, s->req.service, code, message);
		RecordPull(t, &p);
		return;
	}
	if (p.status != 200)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
				 errmsg("invalid batch from %s", t->member),
				 errdetail("HTTP %ld without an error claim.", p.status)));
	CheckBatch(payload, t->member, &p.batch);
	p.nrows = p.batch.nupserts + p.batch.ndeletes;

	owner = get_role_oid(s->owner, true);
	if (!OidIsValid(owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" of subscription " INT64_FORMAT " does not exist", s->owner, s->id),
				 errhint("Subscribe again as an existing role.")));
	if (p.batch.more)
		PrefetchPull(t, &p.batch);
	ApplyChanges(s->target, owner, payload, s->cursor == NULL, s->copy, &applied);
	p.state = "done";
	RecordPull(t, &p);
}

/* FailSubscription - the batch was not applied: the cursor stays, and the pull is retried later */
static void
FailSubscription(Transfer *t, ErrorData *edata)
{
	Pull		p;

	memset(&p, 0, sizeof(p));
	p.state = "failed";
	p.status = TransferStatus(t);
	p.error_code = unpack_sql_state(edata->sqlerrcode);
	p.message = edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message;
	RecordPull(t, &p);
}

/*
 * StartSubscriptions - claim free slots for the subscriptions due for a
 * pull, each with a freshly signed request carrying its cursor
 */
static void
StartSubscriptions(void)
{
	SPITupleTable *tt;
	uint64		nrows;

	if (!HasIdentity())
		return;
	nrows = DueOfKind(&subscription_transfers,
					  "SELECT s.id::text, s.provider::text, p.base_url, s.service, s.purpose, "
					  "s.cursor::text, s.target::oid, s.owner::text, s.phase = 'copy', p.more_urls "
					  "FROM interop.subscription s JOIN interop.peer p ON p.member_id = s.provider "
					  "WHERE s.next_pull <= pg_catalog.clock_timestamp() AND s.id::text <> ALL ($1) "
					  "ORDER BY s.next_pull LIMIT $2");
	tt = SPI_tuptable;
	if (nrows > 0)
		PeerIdentityLoad();
	for (uint64 r = 0; r < nrows; r++)
	{
		HeapTuple	tup = tt->vals[r];
		MemoryContext old;
		char	   *provider = SPI_getvalue(tup, tt->tupdesc, 2);
		Transfer   *t = ClaimTransfer(&subscription_transfers, SPI_getvalue(tup, tt->tupdesc, 1), provider,
									  PeerFirstUrl(provider, tup, tt->tupdesc, 3, 10, "/v1/changes"), &old);
		SubscriptionPull *s;
		bool		isnull;

		if (t == NULL)
			break;
		s = palloc0(sizeof(SubscriptionPull));
		t->data = s;
		s->id = DatumGetInt64(DirectFunctionCall1(int8in, CStringGetDatum(t->name)));
		s->req.service = SPI_getvalue(tup, tt->tupdesc, 4);
		s->req.purpose = SPI_getvalue(tup, tt->tupdesc, 5);
		s->cursor = SPI_getvalue(tup, tt->tupdesc, 6);
		s->target = DatumGetObjectId(SPI_getbinval(tup, tt->tupdesc, 7, &isnull));
		s->owner = SPI_getvalue(tup, tt->tupdesc, 8);
		s->copy = DatumGetBool(SPI_getbinval(tup, tt->tupdesc, 9, &isnull));
		MemoryContextSwitchTo(old);
		SignPull(t);
	}
}

const TransferKind subscription_transfers = {
	.name = "subscription",
	.start = StartSubscriptions,
	.judge = JudgeSubscription,
	.fail = FailSubscription,
	.next_due = "(SELECT min(next_pull) FROM interop.subscription)"
};
