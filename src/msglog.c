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
 * LogExchangeAutonomously() writes a record that must outlive the caller's
 * transaction (a consumer's failed call) through a background worker; see
 * the comment above it.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#define LOG_NARGS 19

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
		FLOAT8OID, TEXTOID, INT8OID, TIMESTAMPTZOID, INT8OID};
		SPIPlanPtr	plan = SPI_prepare("INSERT INTO interop.message_log (direction, peer, service, purpose, "
									   "legal_basis, subject, jti, request_hash, request, response, status, "
									   "error_code, error_message, row_count, duration_ms, client, replay_of, at, consent_id) "
									   "VALUES ($1, $2::interop.member_id, $3, $4, $5, $6, $7::uuid, $8, $9, $10, "
									   "$11, $12, $13, $14, $15, $16, $17, coalesce($18, pg_catalog.clock_timestamp()), $19) "
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
	values[18] = Int64GetDatum(l->consent_id);
	if (l->consent_id == 0)
		nulls[18] = 'n';

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

/*
 * ---- autonomous records ----
 *
 * A consumer's failed call ends in an ERROR that rolls back the calling
 * transaction, and a record written in it would vanish with it.  The
 * record of a failure is therefore handed to a short-lived background
 * worker through a dynamic shared memory segment: it writes and commits the
 * record in its own transaction while the caller waits, then the caller's
 * ERROR goes on.  One process start per failed call; successful calls are
 * logged in the caller's transaction.
 */

#define AUTONOMOUS_STRINGS 13

/* a record in shared memory: fixed fields, then the strings */
typedef struct AutonomousRecord
{
	int			status;
	int			row_count;
	double		duration_ms;
	int64		replay_of;
	TimestampTz at;
	bool		written;
	Size		offset[AUTONOMOUS_STRINGS];	/* 0: NULL */
	char		data[FLEXIBLE_ARRAY_MEMBER];
} AutonomousRecord;

/* the string fields of a record, in the order they are stored */
static const size_t record_strings[AUTONOMOUS_STRINGS] = {
	offsetof(ExchangeLog, direction), offsetof(ExchangeLog, peer),
	offsetof(ExchangeLog, service), offsetof(ExchangeLog, purpose),
	offsetof(ExchangeLog, legal_basis), offsetof(ExchangeLog, subject),
	offsetof(ExchangeLog, jti), offsetof(ExchangeLog, request_hash),
	offsetof(ExchangeLog, request), offsetof(ExchangeLog, response),
	offsetof(ExchangeLog, error_code), offsetof(ExchangeLog, error_message),
	offsetof(ExchangeLog, client)
};

/* RecordString - the address of string field i of a record */
static const char **
RecordString(const ExchangeLog *l, int i)
{
	return (const char **) ((char *) l + record_strings[i]);
}

/*
 * LogExchangeAutonomously - write a record in a transaction of its own, by
 * a background worker.  Never raises an ERROR: a record that cannot be
 * written is a WARNING, so the caller's own error still reaches the user.
 */
void
LogExchangeAutonomously(const ExchangeLog *l)
{
	const char *s[AUTONOMOUS_STRINGS];
	volatile Size size = offsetof(AutonomousRecord, data) + 1;
	dsm_segment *volatile seg = NULL;
	AutonomousRecord *rec;
	char	   *p;
	BackgroundWorker w;
	BackgroundWorkerHandle *handle;
	volatile bool written = false;
	MemoryContext cxt = CurrentMemoryContext;

	for (int i = 0; i < AUTONOMOUS_STRINGS; i++)
	{
		s[i] = *RecordString(l, i);
		if (s[i] != NULL)
			size += strlen(s[i]) + 1;
	}

	PG_TRY();
	{
		seg = dsm_create(size, 0);
		rec = dsm_segment_address(seg);
		memset(rec, 0, offsetof(AutonomousRecord, data));
		rec->status = l->status;
		rec->row_count = l->row_count;
		rec->duration_ms = l->duration_ms;
		rec->replay_of = l->replay_of;
		rec->at = l->at ? l->at : GetCurrentTimestamp();
		p = rec->data + 1;		/* offset 0 means NULL */
		for (int i = 0; i < AUTONOMOUS_STRINGS; i++)
		{
			if (s[i] == NULL)
				continue;
			rec->offset[i] = p - rec->data;
			strcpy(p, s[i]);
			p += strlen(s[i]) + 1;
		}

		memset(&w, 0, sizeof(w));
		w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		w.bgw_start_time = BgWorkerStart_RecoveryFinished;
		w.bgw_restart_time = BGW_NEVER_RESTART;
		snprintf(w.bgw_library_name, BGW_MAXLEN, "interop");
		snprintf(w.bgw_function_name, BGW_MAXLEN, "MessageLogWriterMain");
		snprintf(w.bgw_name, BGW_MAXLEN, "interop log writer for PID %d", MyProcPid);
		snprintf(w.bgw_type, BGW_MAXLEN, "interop log writer");
		w.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(seg));
		memcpy(w.bgw_extra, &MyDatabaseId, sizeof(Oid));
		w.bgw_notify_pid = MyProcPid;
		if (!RegisterDynamicBackgroundWorker(&w, &handle))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("no background worker slot is free"),
					 errhint("Raise max_worker_processes.")));
		if (WaitForBackgroundWorkerShutdown(handle) != BGWH_STOPPED)
			elog(ERROR, "the log writer did not finish");
		written = rec->written;
		dsm_detach(seg);
		seg = NULL;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		if (seg != NULL)
			dsm_detach(seg);
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("the failed exchange with %s could not be written to interop.message_log: %s",
						l->peer ? l->peer : "a peer", edata->message),
				 errhint("The call's own error follows; the provider's log still has the exchange.")));
		return;
	}
	PG_END_TRY();
	if (!written)
		ereport(WARNING,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("the failed exchange with %s could not be written to interop.message_log",
						l->peer ? l->peer : "a peer"),
				 errhint("The server log has the log writer's error.")));
}

/* MessageLogWriterMain - the worker: write one record, commit, exit */
void
MessageLogWriterMain(Datum arg)
{
	Oid			dboid;
	dsm_segment *seg;
	AutonomousRecord *rec;
	ExchangeLog l;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	CurrentResourceOwner = ResourceOwnerCreate(NULL, "interop log writer");
	seg = dsm_attach(DatumGetUInt32(arg));
	if (seg == NULL)
		elog(ERROR, "interop log writer: the record is gone");
	rec = dsm_segment_address(seg);
	memset(&l, 0, sizeof(l));
	for (int i = 0; i < AUTONOMOUS_STRINGS; i++)
		*RecordString(&l, i) = rec->offset[i] ? rec->data + rec->offset[i] : NULL;
	l.status = rec->status;
	l.row_count = rec->row_count;
	l.duration_ms = rec->duration_ms;
	l.replay_of = rec->replay_of;
	l.at = rec->at;

	SetConfigOption("search_path", "pg_catalog, interop", PGC_SUSET, PGC_S_OVERRIDE);
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	pgstat_report_activity(STATE_RUNNING, "writing a failed exchange to interop.message_log");
	LogExchange(&l);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	rec->written = true;
	dsm_detach(seg);
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}
