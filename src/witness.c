/*-------------------------------------------------------------------------
 *
 * witness.c
 *	  Witnesses: peers that cosign this node's newest seal, so that removing
 *	  or rewriting the newest seals is seen by another node.  Both halves:
 *	  the node that sends its head (a kind of src/transfer.c), and the
 *	  witness that checks and cosigns it (POST /v1/cosign, src/gateway.c).
 *
 * The seals form one chain: each names the SHA-256 of the JWS before it.
 * Inside one database the newest seals can be removed, or rewritten and
 * signed again with the node key, and nothing left in the database shows
 * it.  A witness keeps the head it cosigned last for each node.  Each time
 * a node has a new newest seal, the sync worker sends each of its
 * witnesses (interop.add_witness) its seals from the one that witness
 * cosigned last up to the newest (at most MAX_HEAD_SEALS at a time).  The
 * witness checks that this chain extends the head it cosigned before: it
 * holds that seal unchanged, or starts right after it.  Then it signs a
 * cosignature of the new head, stored on both sides (interop.cosignature
 * here, interop.witnessed_head there).
 *
 * A chain that does not extend the cosigned head (the seal it cosigned is
 * missing from it, differs, or is skipped) is an alarm on the witness: a
 * row of interop.witness_alarm with the node's own signed request, a
 * WARNING in its server log, and interop_witness_alarms_total.  The node
 * is refused (409 head_inconsistent) and says so in interop.witness_status
 * and its server log.  interop.verify_log() on the node compares every
 * cosignature it holds with its seals (CheckCosignatures in seal.c).
 *
 * The witness does not take the node's seals on trust for anything but
 * their chain: they are the node's word, signed with the request.  The
 * exchange is not written to the message log: each cosignature would
 * otherwise be a new record to seal, and so a new head to cosign.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include <openssl/x509.h>

/* ---- the witness: POST /v1/cosign ---- */

/* Alarm - record that a node's chain does not extend the head cosigned before */
static char *
Alarm(const char *body, size_t len, const HeadRequest *hr, int64 seal, const char *head,
	  const char *problem)
{
	const HeadSeal *offered = &hr->seals[hr->nseals - 1];
	Datum		values[7];
	Oid			types[7] = {TEXTOID, INT8OID, TEXTOID, INT8OID, TEXTOID, TEXTOID, TEXTOID};

	values[0] = CStringGetTextDatum(hr->iss);
	values[1] = Int64GetDatum(seal);
	values[2] = CStringGetTextDatum(head);
	values[3] = Int64GetDatum(offered->id);
	values[4] = CStringGetTextDatum(offered->hash);
	values[5] = CStringGetTextDatum(problem);
	values[6] = PointerGetDatum(cstring_to_text_with_len(body, len));
	if (SPI_execute_with_args("INSERT INTO interop.witness_alarm (node, witnessed_seal, witnessed_head, "
							  "offered_seal, offered_head, problem, request) "
							  "VALUES ($1::interop.member_id, $2, $3, $4, $5, $6, $7) "
							  "ON CONFLICT (node, offered_head) DO NOTHING",
							  7, types, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write interop.witness_alarm");
	ereport(WARNING,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("interop witness: the seals of \"%s\" do not extend the head this node cosigned", hr->iss),
			 errdetail("%s", problem),
			 errhint("Its newest seals were removed or rewritten after seal " INT64_FORMAT " was cosigned; "
					 "see interop.witness_alarm, and ask its operators to run interop.verify_log().", seal)));
	return BuildWitnessError(hr, "head_inconsistent", problem, true, seal, head);
}

/*
 * ServeHead - check a request to cosign and answer it: a cosignature of
 * its head (*status 200, signed as "interop-cosignature"), or a refusal
 * (signed as an "interop-response").  In the request's transaction; an
 * ERROR is a request that does not verify.
 */
char *
ServeHead(const char *body, size_t len, const char *tls_member, HeadRequest *hr, int *status)
{
	const HeadSeal *head;
	Datum		values[2];
	Oid			types[2] = {TEXTOID, INT8ARRAYOID};
	Datum	   *ids;
	bool		has_last = false;
	int64		last = 0;
	char	   *last_head = NULL;
	bool		holds_last = false;
	bool		head_cosigned = false;
	char	   *payload;
	char	   *jws;
	char	   *now;

	CheckHeadRequest(body, len, tls_member, hr);
	head = &hr->seals[hr->nseals - 1];
	pgstat_report_activity(STATE_RUNNING, psprintf("POST /v1/cosign seal " INT64_FORMAT " from %s", head->id, hr->iss));

	/* one head of a node at a time */
	LockRelationOid(get_relname_relid("witnessed_head", get_namespace_oid("interop", false)),
					ShareRowExclusiveLock);
	values[0] = CStringGetTextDatum(hr->iss);
	if (SPI_execute_with_args("SELECT seal_id, head FROM interop.witnessed_head "
							  "WHERE node = $1::interop.member_id ORDER BY seal_id DESC LIMIT 1",
							  1, types, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.witnessed_head");
	if (SPI_processed == 1)
	{
		bool		isnull;

		has_last = true;
		last = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		last_head = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	}

	/* every seal offered that was cosigned before is the one cosigned */
	ids = palloc(sizeof(Datum) * hr->nseals);
	for (int i = 0; i < hr->nseals; i++)
		ids[i] = Int64GetDatum(hr->seals[i].id);
	values[1] = PointerGetDatum(construct_array(ids, hr->nseals, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	if (SPI_execute_with_args("SELECT seal_id, head, cosigned_at FROM interop.witnessed_head "
							  "WHERE node = $1::interop.member_id AND seal_id = ANY ($2) ORDER BY seal_id",
							  2, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.witnessed_head");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));
		char	   *h = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2);
		char	   *at = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 3);

		for (int i = 0; i < hr->nseals; i++)
			if (hr->seals[i].id == id && strcmp(hr->seals[i].hash, h) != 0)
			{
				*status = 409;
				payload = Alarm(body, len, hr, id, h,
								psprintf("seal " INT64_FORMAT " of \"%s\" is not the seal cosigned at %s: its hash was %s, it is now %s",
										 id, hr->iss, at, h, hr->seals[i].hash));
				return JwsSignJson(payload, strlen(payload), JWS_TYP_RESPONSE);
			}
		if (id == last)
			holds_last = true;
		if (id == head->id)
			head_cosigned = true;
	}

	if (has_last)
	{
		if (hr->has_from && hr->from == last && hr->seals[0].id != last)
		{
			*status = 409;
			payload = Alarm(body, len, hr, last, last_head,
							psprintf("\"%s\" was asked for its seals from seal " INT64_FORMAT " (cosigned last) and sent seals from " INT64_FORMAT ": it no longer holds seal " INT64_FORMAT,
									 hr->iss, last, hr->seals[0].id, last));
			return JwsSignJson(payload, strlen(payload), JWS_TYP_RESPONSE);
		}
		if (head->id < last && !head_cosigned)
		{
			*status = 409;
			payload = BuildWitnessError(hr, "stale_head",
										psprintf("seal " INT64_FORMAT " is older than seal " INT64_FORMAT ", cosigned already; send the seals from seal " INT64_FORMAT,
												 head->id, last, last),
										true, last, last_head);
			return JwsSignJson(payload, strlen(payload), JWS_TYP_RESPONSE);
		}
		if (head->id > last && !holds_last &&
			!(hr->seals[0].prev != NULL && strcmp(hr->seals[0].prev, last_head) == 0))
		{
			*status = 409;
			if (hr->seals[0].id < last)
				payload = Alarm(body, len, hr, last, last_head,
								psprintf("the seals " INT64_FORMAT " to " INT64_FORMAT " of \"%s\" are one chain without seal " INT64_FORMAT ", which was cosigned",
										 hr->seals[0].id, head->id, hr->iss, last));
			else
				payload = BuildWitnessError(hr, "witness_gap",
											psprintf("the seals sent start at seal " INT64_FORMAT "; this witness cosigned seal " INT64_FORMAT " last: send the seals from it",
													 hr->seals[0].id, last),
											true, last, last_head);
			return JwsSignJson(payload, strlen(payload), JWS_TYP_RESPONSE);
		}
	}

	/* it extends the head cosigned before (or there was none): cosign it */
	now = pstrdup(timestamptz_to_str(GetCurrentTransactionStartTimestamp()));
	payload = BuildCosignature(hr, now, has_last && head->id > last, last);
	jws = JwsSignJson(payload, strlen(payload), JWS_TYP_COSIGNATURE);
	if (!head_cosigned)
	{
		Datum		v[5];
		Oid			t[5] = {TEXTOID, INT8OID, TEXTOID, TEXTOID, TEXTOID};

		v[0] = CStringGetTextDatum(hr->iss);
		v[1] = Int64GetDatum(head->id);
		v[2] = CStringGetTextDatum(head->hash);
		v[3] = CStringGetTextDatum(head->jws);
		v[4] = CStringGetTextDatum(jws);
		if (SPI_execute_with_args("INSERT INTO interop.witnessed_head (node, seal_id, head, seal, cosignature) "
								  "VALUES ($1::interop.member_id, $2, $3, $4, $5)",
								  5, t, v, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not write interop.witnessed_head");
	}
	*status = 200;
	return jws;
}

/* ---- the node: sending its head to each witness ---- */

/* what a request to a witness carries */
typedef struct HeadTransfer
{
	char	   *jti;
	char	   *req_hash;
	int64		seal_id;		/* the head sent */
	char	   *head;
} HeadTransfer;

/* RecordWitnessOutcome - how a request to a witness ended; in a transaction */
static void
RecordWitnessOutcome(Transfer *t, const char *error, bool failure, bool has_witnessed, int64 witnessed)
{
	HeadTransfer *h = t->data;
	Datum		values[4];
	Oid			types[4] = {TEXTOID, TEXTOID, BOOLOID, INT8OID};
	char		nulls[5] = "    ";

	if (error != NULL && failure)
		ereport(LOG,
				(errmsg("interop sync: witness %s did not cosign seal " INT64_FORMAT ": %s", t->member, h->seal_id, error),
				 errhint("See interop.witness_status.")));
	values[0] = CStringGetTextDatum(t->member);
	values[1] = error ? CStringGetTextDatum(error) : (Datum) 0;
	nulls[1] = error ? ' ' : 'n';
	values[2] = BoolGetDatum(failure);
	values[3] = Int64GetDatum(witnessed);
	nulls[3] = has_witnessed ? ' ' : 'n';
	if (SPI_execute_with_args("INSERT INTO interop.witness_status AS s (member) VALUES ($1::interop.member_id) "
							  "ON CONFLICT (member) DO UPDATE SET "
							  "last_attempt_at = pg_catalog.clock_timestamp(), last_error = $2, "
							  "witnessed_seal = CASE WHEN $4 IS NULL THEN s.witnessed_seal ELSE $4 END, "
							  "failures = CASE WHEN $3 THEN s.failures + 1 ELSE 0 END, "
							  "failed_total = s.failed_total + CASE WHEN $3 THEN 1 ELSE 0 END, "
							  "last_success_at = CASE WHEN $2 IS NULL THEN pg_catalog.clock_timestamp() ELSE s.last_success_at END, "
							  "next_attempt = pg_catalog.clock_timestamp() + CASE WHEN $3 "
							  "THEN least(600, 5 * 2 ^ least(s.failures, 10)) * interval '1 s' ELSE interval '0' END",
							  4, types, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not update interop.witness_status");
}

/* JudgeWitness - a witness's answer: a cosignature stored, or a refusal recorded */
static void
JudgeWitness(Transfer *t)
{
	HeadTransfer *h = t->data;
	long		status;
	char	   *body;
	char	   *typ;

	if (t->rc != CURLE_OK)
	{
		PeerFailure f = TransferFailure(t);

		RecordWitnessOutcome(t, PeerFailureText(&f), true, false, 0);
		return;
	}
	status = TransferStatus(t);
	if (!TransferSigned(t))
	{
		RecordWitnessOutcome(t, psprintf("witness %s answered HTTP %ld without a signed body", t->member, status),
							 true, false, 0);
		return;
	}
	body = TransferBody(t);
	typ = JwsHeaderTyp(body);
	if (typ != NULL && strcmp(typ, JwsTypName(JWS_TYP_RESPONSE)) == 0)
	{
		char	   *code;
		char	   *message;
		Jsonb	   *jb = CheckResponse(body, t->got.len, t->member, h->jti, h->req_hash, &code, &message);
		JsonbValue *w = ResponseClaim(jb, "witnessed");
		bool		has_witnessed = false;
		int64		witnessed = 0;

		if (code == NULL)
			elog(ERROR, "witness %s answered HTTP %ld with a response that is not a refusal", t->member, status);
		if (w != NULL && w->type == jbvBinary && JsonContainerIsObject(w->val.binary.data))
			witnessed = Int64Claim(JsonbValueToJsonb(w), "seal", &has_witnessed, "refusal");
		/* told where to start: at once, not a failure */
		if (has_witnessed && (strcmp(code, "witness_gap") == 0 || strcmp(code, "stale_head") == 0))
			RecordWitnessOutcome(t, psprintf("%s: %s", code, message), false, true, witnessed);
		else
		{
			if (strcmp(code, "head_inconsistent") == 0)
				ereport(WARNING,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("interop sync: witness %s says the seals of this node do not extend the head it cosigned", t->member),
						 errdetail("%s", message),
						 errhint("Seals this node had sent were removed or rewritten; run interop.verify_log().")));
			RecordWitnessOutcome(t, psprintf("witness %s refused seal " INT64_FORMAT ": %s: %s",
											 t->member, h->seal_id, code, message), true, false, 0);
		}
		return;
	}
	{
		Jsonb	   *jb = CheckCosignature(body, t->got.len, t->member, h->jti, h->req_hash, h->seal_id, h->head);
		JsonbValue *at = ResponseClaim(jb, "cosigned_at");
		Datum		values[5];
		Oid			types[5] = {TEXTOID, INT8OID, TEXTOID, TEXTOID, TEXTOID};

		values[0] = CStringGetTextDatum(t->member);
		values[1] = Int64GetDatum(h->seal_id);
		values[2] = CStringGetTextDatum(h->head);
		values[3] = PointerGetDatum(cstring_to_text_with_len(at->val.string.val, at->val.string.len));
		values[4] = CStringGetTextDatum(body);
		if (SPI_execute_with_args("INSERT INTO interop.cosignature (witness, seal_id, head, cosigned_at, jws) "
								  "VALUES ($1::interop.member_id, $2, $3, $4::text::timestamptz, $5) "
								  "ON CONFLICT (witness, seal_id) DO NOTHING",
								  5, types, values, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not write interop.cosignature");
		RecordWitnessOutcome(t, NULL, false, true, h->seal_id);
	}
}

/* FailWitness - the answer did not verify, or could not be stored */
static void
FailWitness(Transfer *t, ErrorData *edata)
{
	RecordWitnessOutcome(t, edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message,
						 true, false, 0);
}

/*
 * StartWitness - for each witness whose cosigned seal is not this node's
 * newest, when its wait is over: the seals from the one it cosigned last
 * (or the newest alone, when it is not known), signed and POSTed to its
 * /v1/cosign.
 */
static void
StartWitness(void)
{
	uint64		nrows;
	SPITupleTable *tt;

	nrows = DueOfKind(&witness_transfers,
					  "SELECT w.member::text, st.witnessed_seal, p.base_url, p.more_urls "
					  "FROM interop.witness w LEFT JOIN interop.witness_status st ON st.member = w.member "
					  "LEFT JOIN interop.peer p ON p.member_id = w.member "
					  "WHERE coalesce(st.next_attempt, '-infinity') <= pg_catalog.clock_timestamp() "
					  "AND (SELECT max(id) FROM interop.log_seal) IS DISTINCT FROM st.witnessed_seal "
					  "AND EXISTS (SELECT 1 FROM interop.log_seal) "
					  "AND w.member::text <> ALL ($1) ORDER BY 1 LIMIT $2");
	tt = SPI_tuptable;
	if (nrows > 0)
		PeerIdentityLoad();
	for (uint64 r = 0; r < nrows; r++)
	{
		HeapTuple	tup = tt->vals[r];
		TupleDesc	desc = tt->tupdesc;
		char	   *member = SPI_getvalue(tup, desc, 1);
		bool		has_from;
		int64		from = DatumGetInt64(SPI_getbinval(tup, desc, 2, &has_from));
		char	   *url = PeerFirstUrl(member, tup, desc, 3, 4, "/v1/cosign");
		MemoryContext old;
		Transfer   *t;
		HeadTransfer *h;
		HeadSeal   *seals;
		int			n;
		Datum		arg;
		Oid			argtype = INT8OID;
		char	   *claims;
		SPITupleTable *st;

		has_from = !has_from;
		if (url == NULL)
			continue;			/* the peer was removed: nothing to send it to */
		arg = Int64GetDatum(from);
		if (SPI_execute_with_args(has_from ?
								  "SELECT id, jws FROM interop.log_seal WHERE id >= $1 ORDER BY id LIMIT 100" :
								  "SELECT id, jws FROM interop.log_seal ORDER BY id DESC LIMIT 1",
								  has_from ? 1 : 0, &argtype, &arg, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read interop.log_seal");
		if (SPI_processed == 0 &&
			SPI_execute("SELECT id, jws FROM interop.log_seal ORDER BY id DESC LIMIT 1", true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read interop.log_seal");
		st = SPI_tuptable;
		n = (int) SPI_processed;
		if (n == 0)
			continue;
		t = ClaimTransfer(&witness_transfers, member, member, url, &old);
		if (t == NULL)
			break;
		seals = palloc0(sizeof(HeadSeal) * n);
		for (int i = 0; i < n; i++)
		{
			bool		isnull;

			seals[i].id = DatumGetInt64(SPI_getbinval(st->vals[i], st->tupdesc, 1, &isnull));
			seals[i].jws = SPI_getvalue(st->vals[i], st->tupdesc, 2);
		}
		h = palloc0(sizeof(HeadTransfer));
		t->data = h;
		h->jti = NewJti();
		h->seal_id = seals[n - 1].id;
		h->head = Sha256Base64Url(seals[n - 1].jws, strlen(seals[n - 1].jws));
		claims = BuildHeadRequest(member, h->jti, has_from, from, seals, n);
		t->request = JwsSignJson(claims, strlen(claims), JWS_TYP_HEAD);
		h->req_hash = Sha256Base64Url(t->request, strlen(t->request));
		MemoryContextSwitchTo(old);
		SPI_freetuptable(st);
	}
}

const TransferKind witness_transfers = {
	.name = "cosignature",
	.start = StartWitness,
	.judge = JudgeWitness,
	.fail = FailWitness,
	/* due when a witness has not cosigned the newest seal and its wait is over */
	.next_due = "(SELECT min(coalesce(st.next_attempt, pg_catalog.clock_timestamp())) FROM interop.witness w "
	"LEFT JOIN interop.witness_status st ON st.member = w.member "
	"WHERE (SELECT max(id) FROM interop.log_seal) IS DISTINCT FROM st.witnessed_seal "
	"AND EXISTS (SELECT 1 FROM interop.log_seal))"
};

/* ---- checking a stored cosignature ---- */

/*
 * CosignatureProblem - what is wrong with a stored cosignature, or NULL:
 * signed by the key of the witness's certificate in its header, and over
 * (node, seal_id, head).  The certificate was checked against the trust
 * anchors when the cosignature arrived; here it only has to name the
 * witness, so that a cosignature stays checkable after it expires.
 */
char *
CosignatureProblem(const char *jws, const char *witness, int64 seal_id, const char *head)
{
	MemoryContext cxt = CurrentMemoryContext;
	X509	   *cert = JwsX5cLeaf(jws);
	char	   *member;
	char	   *volatile problem = NULL;

	if (cert == NULL)
		return pstrdup("it carries no certificate");
	member = CertificateMemberId(cert);
	if (member == NULL || strcmp(member, witness) != 0)
	{
		X509_free(cert);
		return psprintf("it is signed by a certificate of \"%s\"", member ? member : "(no member id)");
	}
	PG_TRY();
	{
		const char *signer;
		size_t		plen;
		char	   *payload = JwsVerifyCompact(jws, strlen(jws), X509_get0_pubkey(cert), JWS_TYP_COSIGNATURE,
											   &signer, &plen);
		Jsonb	   *jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(pnstrdup(payload, plen))));
		JsonbValue *v;
		char	   *s;
		bool		present;

		v = getKeyJsonValueFromContainer(&jb->root, "node", 4, NULL);
		s = v && v->type == jbvString ? pnstrdup(v->val.string.val, v->val.string.len) : NULL;
		if (s == NULL || strcmp(s, GetNodeState()->member_id) != 0)
			problem = psprintf("it is a cosignature of the seals of \"%s\"", s ? s : "(nobody)");
		else if (Int64Claim(jb, "seal", &present, "cosignature") != seal_id || !present)
			problem = pstrdup("it is a cosignature of another seal");
		else
		{
			v = getKeyJsonValueFromContainer(&jb->root, "head", 4, NULL);
			if (v == NULL || v->type != jbvString || strlen(head) != v->val.string.len ||
				memcmp(head, v->val.string.val, v->val.string.len) != 0)
				problem = pstrdup("it is a cosignature of another head");
		}
	}
	PG_CATCH();
	{
		ErrorData  *e;

		MemoryContextSwitchTo(cxt);
		e = CopyErrorData();
		FlushErrorState();
		problem = psprintf("it does not verify: %s", e->message);
	}
	PG_END_TRY();
	X509_free(cert);
	return problem;
}

/* ---- metrics ---- */

/* WitnessMetrics - both halves' gauges and counters; connected to SPI */
void
WitnessMetrics(StringInfo buf)
{
	if (SPI_execute("SELECT count(*) FROM interop.witness_alarm", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.witness_alarm");
	appendStringInfo(buf,
					 "# HELP interop_witness_alarms_total Chains of seals of other nodes that did not extend the head this node had cosigned as their witness.\n"
					 "# TYPE interop_witness_alarms_total counter\n"
					 "interop_witness_alarms_total %s\n",
					 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	if (SPI_execute("SELECT w.member::text, coalesce(st.failed_total, 0), "
					"extract(epoch FROM clock_timestamp() - (SELECT max(c.received_at) FROM interop.cosignature c "
					"WHERE c.witness = w.member))::float8 "
					"FROM interop.witness w LEFT JOIN interop.witness_status st ON st.member = w.member ORDER BY 1",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.witness_status");
	appendStringInfoString(buf,
						   "# HELP interop_witness_failures_total Requests to each witness that failed or were refused.\n"
						   "# TYPE interop_witness_failures_total counter\n");
	for (uint64 i = 0; i < SPI_processed; i++)
		appendStringInfo(buf, "interop_witness_failures_total{witness=\"%s\"} %s\n",
						 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
						 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2));
	appendStringInfoString(buf,
						   "# HELP interop_cosignature_age_seconds Time since the newest cosignature from each witness (no sample before the first).\n"
						   "# TYPE interop_cosignature_age_seconds gauge\n");
	for (uint64 i = 0; i < SPI_processed; i++)
		if (SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3) != NULL)
			appendStringInfo(buf, "interop_cosignature_age_seconds{witness=\"%s\"} %s\n",
							 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
							 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3));
	if (SPI_execute("SELECT node::text, extract(epoch FROM clock_timestamp() - max(cosigned_at))::float8 "
					"FROM interop.witnessed_head GROUP BY node ORDER BY 1", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.witnessed_head");
	appendStringInfoString(buf,
						   "# HELP interop_witnessed_head_age_seconds Time since this node, as a witness, last cosigned a new head of each node.\n"
						   "# TYPE interop_witnessed_head_age_seconds gauge\n");
	for (uint64 i = 0; i < SPI_processed; i++)
		appendStringInfo(buf, "interop_witnessed_head_age_seconds{node=\"%s\"} %s\n",
						 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
						 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2));
}
