/*-------------------------------------------------------------------------
 *
 * msglog.c
 *	  Writing and reading interop.message_log.
 *
 * The first record of a verified request is unique per (consumer, jti)
 * (a partial unique index): LogExchange() inserts it with ON CONFLICT DO
 * NOTHING and reports a conflict, so two copies of one request that race
 * through two gateway workers cannot both be answered as new.  The plans
 * are prepared once per backend.  Callers are connected to SPI.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#define LOG_NARGS 18

static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr find_plan = NULL;

/* TextOrNull - a text datum, or a null flag */
static Datum
TextOrNull(const char *s, char *nulls, int i)
{
	if (s == NULL)
	{
		nulls[i] = 'n';
		return (Datum) 0;
	}
	return CStringGetTextDatum(s);
}

/*
 * LogExchange - write one record; returns its id.  Returns 0 without
 * writing when the record is the first of a jti already recorded.
 */
int64
LogExchange(const ExchangeLog *l)
{
	Datum		values[LOG_NARGS];
	char		nulls[LOG_NARGS + 1];
	int			ret;
	bool		isnull;

	if (insert_plan == NULL)
	{
		Oid			types[LOG_NARGS] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
			TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID, TEXTOID, INT4OID,
		FLOAT8OID, TEXTOID, INT8OID, TIMESTAMPTZOID};
		SPIPlanPtr	plan = SPI_prepare("INSERT INTO interop.message_log (direction, peer, service, purpose, "
									   "legal_basis, subject, jti, request_hash, request, response, status, "
									   "error_code, error_message, row_count, duration_ms, client, replay_of, at) "
									   "VALUES ($1, $2::interop.member_id, $3, $4, $5, $6, $7::uuid, $8, $9, $10, "
									   "$11, $12, $13, $14, $15, $16, $17, coalesce($18, pg_catalog.clock_timestamp())) "
									   "ON CONFLICT (peer, jti) WHERE direction = 'in' AND replay_of IS NULL DO NOTHING "
									   "RETURNING id",
									   LOG_NARGS, types);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare the message log insert: %s", SPI_result_code_string(SPI_result));
		insert_plan = plan;
	}

	memset(nulls, ' ', LOG_NARGS);
	nulls[LOG_NARGS] = '\0';
	values[0] = CStringGetTextDatum(l->direction);
	values[1] = TextOrNull(l->peer, nulls, 1);
	values[2] = TextOrNull(l->service, nulls, 2);
	values[3] = TextOrNull(l->purpose, nulls, 3);
	values[4] = TextOrNull(l->legal_basis, nulls, 4);
	values[5] = TextOrNull(l->subject, nulls, 5);
	values[6] = TextOrNull(l->jti, nulls, 6);
	values[7] = TextOrNull(l->request_hash, nulls, 7);
	values[8] = TextOrNull(l->request, nulls, 8);
	values[9] = TextOrNull(l->response, nulls, 9);
	values[10] = Int32GetDatum(l->status);
	values[11] = TextOrNull(l->error_code, nulls, 11);
	values[12] = TextOrNull(l->error_message, nulls, 12);
	values[13] = Int32GetDatum(l->row_count);
	if (l->row_count < 0)
		nulls[13] = 'n';
	values[14] = Float8GetDatum(l->duration_ms);
	values[15] = TextOrNull(l->client, nulls, 15);
	values[16] = Int64GetDatum(l->replay_of);
	if (l->replay_of == 0)
		nulls[16] = 'n';
	values[17] = TimestampTzGetDatum(l->at);
	if (l->at == 0)
		nulls[17] = 'n';

	ret = SPI_execute_plan(insert_plan, values, nulls, false, 0);
	if (ret != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not write the message log: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return 0;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * FindFirstRecord - the first record of a request (consumer, jti) served
 * here: its id, request hash, status and response.  False when none.
 */
bool
FindFirstRecord(const char *peer, const char *jti, LoggedAnswer *out)
{
	Datum		values[2];
	int			ret;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;

	if (find_plan == NULL)
	{
		Oid			types[2] = {TEXTOID, TEXTOID};
		SPIPlanPtr	plan = SPI_prepare("SELECT id, request_hash, status, response FROM interop.message_log "
									   "WHERE direction = 'in' AND peer = $1::interop.member_id "
									   "AND jti = $2::uuid AND replay_of IS NULL",
									   2, types);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare the message log lookup: %s", SPI_result_code_string(SPI_result));
		find_plan = plan;
	}
	values[0] = CStringGetTextDatum(peer);
	values[1] = CStringGetTextDatum(jti);
	ret = SPI_execute_plan(find_plan, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read the message log: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	out->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	out->request_hash = SPI_getvalue(tup, desc, 2);
	out->status = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
	out->response = SPI_getvalue(tup, desc, 4);
	return true;
}
