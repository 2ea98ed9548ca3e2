/*-------------------------------------------------------------------------
 *
 * msglog.c
 *	  Writing and reading interop.message_log.
 *
 * The first record of a verified request is unique per (consumer, jti)
 * (a partial unique index): LogExchange() inserts it with ON CONFLICT DO
 * NOTHING and reports a conflict, so two copies of one request that race
 * through two gateway workers cannot both be answered as new.  A 5xx
 * answer (timeout, internal_error, shutting_down...) is not a first
 * record: it was no answer to the request, and the consumer's retry with
 * the same jti must run it, not get the failure again.  The plans
 * are prepared once per backend.  Callers are connected to SPI.
 *
 * LogExchangeDurably() writes a record that must outlive the caller's
 * transaction (every consumer call) through the log writer; see the
 * comment above it.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "access/twophase.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#define LOG_NARGS 20
#define RECORD_STRINGS 13

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
 * Detached - a JWS without its payload (RFC 7515, appendix F): the header,
 * with the signer's chain, and the signature.  With interop.log_bodies off
 * the log keeps this, and the message's hash, instead of the message.
 */
static const char *
Detached(const char *jws)
{
	const char *dot1 = jws ? strchr(jws, '.') : NULL;
	const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;

	if (dot2 == NULL)
		return NULL;			/* not a JWS: nothing to keep */
	return psprintf("%.*s.%s", (int) (dot1 - jws), jws, dot2);
}

/* LoggedBodyKept - whether a logged JWS is whole (not detached) */
bool
LoggedBodyKept(const char *jws)
{
	return jws != NULL && strstr(jws, "..") == NULL;
}

/*
 * ---- protected headers kept once ----
 *
 * Two thirds of a logged JWS is its protected header, which carries the
 * signer's certificate chain and is the same in every message of a signer.
 * The log keeps each distinct header once, in interop.message_header, under the
 * base64url SHA-256 of its text, and a record keeps the JWS with its header
 * replaced by "~" and that digest: "~<digest>.<payload>.<signature>".  The
 * reference is what the record's seal hashes, and it names the header by
 * its hash, so a changed or removed header shows (LoggedJws() refuses it,
 * verify_log() reports it) and cannot pass for another.  A text that
 * already begins with "~" (a peer's garbage) is kept with one more "~" in
 * front.  LoggedJws() gives back the JWS byte for byte.
 *
 * Each backend remembers the headers it wrote or read; one it inserted is
 * trusted only once its transaction commits, so a rolled-back insert is
 * inserted again the next time.
 */
#define HEADER_MARK '~'
#define HEADER_DIGEST_LEN 43	/* base64url of 32 bytes, unpadded */
#define HEADER_MIN_LEN 64		/* shorter headers stay in the record */
#define KNOWN_HEADERS 256

typedef struct KnownHeader
{
	char		digest[HEADER_DIGEST_LEN + 1];
	char	   *header;			/* in TopMemoryContext */
	bool		committed;		/* false: inserted by the open transaction */
} KnownHeader;

static KnownHeader known_headers[KNOWN_HEADERS];
static int	nknown_headers = 0;
static bool header_callbacks = false;
static SPIPlanPtr header_insert_plan = NULL;
static SPIPlanPtr header_find_plan = NULL;

/* ForgetUncommittedHeaders - drop what the open (sub)transaction inserted */
static void
ForgetUncommittedHeaders(void)
{
	int			n = 0;

	for (int i = 0; i < nknown_headers; i++)
	{
		if (known_headers[i].committed)
			known_headers[n++] = known_headers[i];
		else
			pfree(known_headers[i].header);
	}
	nknown_headers = n;
}

static void
HeaderXactCallback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		for (int i = 0; i < nknown_headers; i++)
			known_headers[i].committed = true;
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		ForgetUncommittedHeaders();
}

static void
HeaderSubXactCallback(SubXactEvent event, SubTransactionId mySubid,
					  SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		ForgetUncommittedHeaders();
}

static KnownHeader *
FindKnownHeader(const char *digest)
{
	for (int i = 0; i < nknown_headers; i++)
		if (memcmp(known_headers[i].digest, digest, HEADER_DIGEST_LEN) == 0)
			return &known_headers[i];
	return NULL;
}

static void
RememberHeader(const char *digest, const char *header, size_t len, bool committed)
{
	KnownHeader *k;

	if (!header_callbacks)
	{
		RegisterXactCallback(HeaderXactCallback, NULL);
		RegisterSubXactCallback(HeaderSubXactCallback, NULL);
		header_callbacks = true;
	}
	if (nknown_headers == KNOWN_HEADERS)
	{
		/* full: start again (a signer has one header per key and kind) */
		for (int i = 0; i < nknown_headers; i++)
			pfree(known_headers[i].header);
		nknown_headers = 0;
	}
	k = &known_headers[nknown_headers++];
	memcpy(k->digest, digest, HEADER_DIGEST_LEN);
	k->digest[HEADER_DIGEST_LEN] = '\0';
	k->header = MemoryContextAlloc(TopMemoryContext, len + 1);
	memcpy(k->header, header, len);
	k->header[len] = '\0';
	k->committed = committed;
}

/*
 * IntactHeader - a row of interop.message_header with this digest whose
 * header still hashes to it, in the caller's memory context, or NULL.  A
 * digest can have more than one row: two backends that wrote a new header
 * at once each inserted it (no unique index, so that no writer waits for
 * another's transaction).  Connects to SPI itself.
 */
static char *
IntactHeader(const char *digest)
{
	MemoryContext caller = CurrentMemoryContext;
	char	   *header = NULL;
	Datum		value;
	int			ret;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (header_find_plan == NULL)
	{
		Oid			type = TEXTOID;
		SPIPlanPtr	plan = SPI_prepare("SELECT header FROM interop.message_header WHERE digest = $1 ORDER BY id",
									   1, &type);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare the header lookup: %s", SPI_result_code_string(SPI_result));
		header_find_plan = plan;
	}
	value = PointerGetDatum(cstring_to_text_with_len(digest, HEADER_DIGEST_LEN));
	ret = SPI_execute_plan(header_find_plan, &value, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.message_header: %s", SPI_result_code_string(ret));
	for (uint64 i = 0; i < SPI_processed && header == NULL; i++)
	{
		char	   *h = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		if (h != NULL && strncmp(Sha256Base64Url(h, strlen(h)), digest, HEADER_DIGEST_LEN) == 0)
			header = MemoryContextStrdup(caller, h);
	}
	SPI_finish();
	return header;
}

/*
 * StoredJws - the text a record keeps for a logged JWS (see above).
 * Inserts its header into interop.message_header unless it is there
 * already.
 */
static const char *
StoredJws(const char *jws)
{
	const char *dot;
	char	   *digest;
	size_t		hlen;

	if (jws == NULL)
		return NULL;
	if (jws[0] == HEADER_MARK)
		return psprintf("%c%s", HEADER_MARK, jws);
	dot = strchr(jws, '.');
	if (dot == NULL || strchr(dot + 1, '.') == NULL)
		return jws;
	hlen = dot - jws;
	if (hlen < HEADER_MIN_LEN)
		return jws;
	for (size_t i = 0; i < hlen; i++)
		if (Base64UrlValue((unsigned char) jws[i]) < 0)
			return jws;			/* not a JWS header: kept as it came */
	digest = Sha256Base64Url(jws, hlen);
	if (FindKnownHeader(digest) == NULL)
	{
		if (IntactHeader(digest) != NULL)
			RememberHeader(digest, jws, hlen, true);
		else
		{
			Datum		values[2];
			int			ret;

			if (header_insert_plan == NULL)
			{
				Oid			types[2] = {TEXTOID, TEXTOID};
				SPIPlanPtr	plan = SPI_prepare("INSERT INTO interop.message_header (digest, header) VALUES ($1, $2)",
											   2, types);

				if (plan == NULL || SPI_keepplan(plan) != 0)
					elog(ERROR, "could not prepare the header insert: %s", SPI_result_code_string(SPI_result));
				header_insert_plan = plan;
			}
			values[0] = CStringGetTextDatum(digest);
			values[1] = PointerGetDatum(cstring_to_text_with_len(jws, hlen));
			ret = SPI_execute_plan(header_insert_plan, values, NULL, false, 0);
			if (ret != SPI_OK_INSERT)
				elog(ERROR, "could not write interop.message_header: %s", SPI_result_code_string(ret));
			RememberHeader(digest, jws, hlen, false);
		}
	}
	return psprintf("%c%s%s", HEADER_MARK, digest, dot);
}

/* HeaderByDigest - the protected header a record refers to, checked against its digest */
static const char *
HeaderByDigest(const char *digest)
{
	KnownHeader *k = FindKnownHeader(digest);
	char	   *header;

	if (k != NULL)
		return k->header;
	header = IntactHeader(digest);
	if (header == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the protected header %.*s of a logged message is missing or changed",
						HEADER_DIGEST_LEN, digest),
				 errdetail("interop.message_header holds no header with this SHA-256, so the message cannot be given back as it was logged."),
				 errhint("Restore interop.message_header from a backup; interop.verify_log() lists the records concerned.")));
	RememberHeader(digest, header, strlen(header), true);
	return header;
}

/*
 * LoggedJws - the JWS a record's request or response column holds, as it
 * was sent (see above); NULL for NULL.  Connects to SPI when it must read a
 * header.
 */
char *
LoggedJws(const char *stored)
{
	if (stored == NULL)
		return NULL;
	if (stored[0] != HEADER_MARK)
		return pstrdup(stored);
	if (stored[1] == HEADER_MARK)
		return pstrdup(stored + 1);
	if (strlen(stored) < 1 + HEADER_DIGEST_LEN + 1 || stored[1 + HEADER_DIGEST_LEN] != '.')
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("a logged message refers to its protected header in a form this version does not know"),
				 errdetail("It begins with \"%.*s\".", 1 + HEADER_DIGEST_LEN, stored)));
	return psprintf("%s%s", HeaderByDigest(stored + 1), stored + 1 + HEADER_DIGEST_LEN);
}

/*
 * JwsHeaderRef - the digest a stored request or response refers to, or
 * NULL when it holds its header itself (verify_log())
 */
const char *
JwsHeaderRef(const char *stored, size_t len)
{
	if (len < 1 + HEADER_DIGEST_LEN + 1 || stored[0] != HEADER_MARK || stored[1] == HEADER_MARK)
		return NULL;
	return stored + 1;
}

PG_FUNCTION_INFO_V1(interop_message_jws);
/*
 * interop_message_jws - a message_log request or response as the JWS that
 * was sent
 */
Datum
interop_message_jws(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(LoggedJws(text_to_cstring(PG_GETARG_TEXT_PP(0)))));
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
		FLOAT8OID, TEXTOID, INT8OID, TIMESTAMPTZOID, INT8OID, TEXTOID};
		SPIPlanPtr	plan = SPI_prepare("INSERT INTO interop.message_log (direction, peer, service, purpose, "
									   "legal_basis, subject, jti, request_hash, request, response, status, "
									   "error_code, error_message, row_count, duration_ms, client, replay_of, at, consent_id, response_hash) "
									   "VALUES ($1, $2::interop.member_id, $3, $4, $5, $6, $7::uuid, $8, $9, $10, "
									   "$11, $12, $13, $14, $15, $16, $17, coalesce($18, pg_catalog.clock_timestamp()), $19, $20) "
									   "ON CONFLICT (peer, jti) WHERE direction = 'in' AND replay_of IS NULL AND status < 500 DO NOTHING "
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
	values[8] = TextOrNull(StoredJws(interop_log_bodies ? l->request : Detached(l->request)), nulls, 8);
	values[9] = TextOrNull(StoredJws(interop_log_bodies ? l->response : Detached(l->response)), nulls, 9);
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
	values[19] = TextOrNull(l->response ? Sha256Base64Url(l->response, strlen(l->response)) : NULL, nulls, 19);

	/* the outcome, for readiness: a log that cannot be written is not ready */
	PG_TRY();
	{
		ret = SPI_execute_plan(insert_plan, values, nulls, false, 0);
		if (ret != SPI_OK_INSERT_RETURNING)
			elog(ERROR, "could not write the message log: %s", SPI_result_code_string(ret));
	}
	PG_CATCH();
	{
		ErrorData  *e = CopyErrorData();

		NoteLogWrite(false, e->message);
		FreeErrorData(e);
		PG_RE_THROW();
	}
	PG_END_TRY();
	NoteLogWrite(true, NULL);
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
									   "AND jti = $2::uuid AND replay_of IS NULL AND status < 500",
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
	out->response = LoggedJws(SPI_getvalue(tup, desc, 4));
	return true;
}

/*
 * ---- records that outlive the caller's transaction ----
 *
 * A consumer's record of an exchange must survive a rollback of the calling
 * transaction: a user must not hide a read with ROLLBACK, and a failed call
 * ends in an ERROR that rolls everything back anyway.  interop.query()
 * therefore never writes its record itself.  It copies the record into
 * shared memory and hands it to another process, which inserts and commits
 * it; the caller waits for that commit before it returns any row.  The
 * record is durable before the data is in the user's hands, whatever the
 * calling transaction does next.
 *
 * When the library is preloaded, the other process is the log writer, a
 * background worker that runs for the life of the server in
 * interop.database.  Its queue is one slot per PGPROC in shared memory,
 * each with room for a record of up to SLOT_RECORD_SIZE bytes: a backend
 * copies its record into its own slot (a larger one into a dynamic shared
 * memory segment, whose handle the slot then holds) and sets the writer's
 * latch; the writer takes every pending slot, inserts all those records in
 * one transaction, commits (one WAL flush for all of them: group commit)
 * and sets each waiter's latch.  Otherwise (not preloaded, or another
 * database) a short-lived background worker is started for the one record,
 * in a segment of its own.
 */

/* a record in shared memory: fixed fields, then the strings */
typedef struct SharedRecord
{
	int			status;
	int			row_count;
	double		duration_ms;
	int64		replay_of;
	int64		consent_id;
	TimestampTz at;
	/* set by the writer */
	bool		written;
	int64		id;
	int			sqlerrcode;
	char		error[256];
	Size		offset[RECORD_STRINGS];	/* 0: NULL */
	char		data[FLEXIBLE_ARRAY_MEMBER];
} SharedRecord;

/* the string fields of a record, in the order they are stored */
static const size_t record_strings[RECORD_STRINGS] = {
	offsetof(ExchangeLog, direction), offsetof(ExchangeLog, peer),
	offsetof(ExchangeLog, service), offsetof(ExchangeLog, purpose),
	offsetof(ExchangeLog, legal_basis), offsetof(ExchangeLog, subject),
	offsetof(ExchangeLog, jti), offsetof(ExchangeLog, request_hash),
	offsetof(ExchangeLog, request), offsetof(ExchangeLog, response),
	offsetof(ExchangeLog, error_code), offsetof(ExchangeLog, error_message),
	offsetof(ExchangeLog, client)
};

#define SLOT_FREE		0
#define SLOT_PENDING	1		/* handed over, not yet taken */
#define SLOT_TAKEN		2		/* the writer is writing it */
#define SLOT_DONE		3		/* committed, or failed: see the record */

/* a record up to this size goes in the slot itself, larger ones in a segment */
#define SLOT_RECORD_SIZE 16384

typedef struct LogSlot
{
	int			state;
	bool		in_slot;		/* the record is in the slot's buffer, */
	dsm_handle	handle;			/* else in this segment */
	Latch	   *latch;			/* the waiting backend's */
} LogSlot;

typedef struct LogQueue
{
	slock_t		mutex;
	Latch	   *writer_latch;	/* NULL when no writer is ready */
	Oid			writer_db;		/* the database it writes in */
	Latch	   *sync_latch;		/* the sync worker's, when it runs */
	int			nslots;
	LogSlot		slots[FLEXIBLE_ARRAY_MEMBER];
} LogQueue;

static LogQueue *queue = NULL;

/* RecordString - the address of string field i of a record */
static const char **
RecordString(const ExchangeLog *l, int i)
{
	return (const char **) ((char *) l + record_strings[i]);
}

/* QueueSlots - one slot per PGPROC */
static int
QueueSlots(void)
{
	return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

/* SlotsSize - the queue up to its slots' buffers */
static Size
SlotsSize(void)
{
	return MAXALIGN(add_size(offsetof(LogQueue, slots), mul_size(QueueSlots(), sizeof(LogSlot))));
}

/* LogQueueShmemSize - shared memory for the queue (shmem_request_hook) */
Size
LogQueueShmemSize(void)
{
	return add_size(SlotsSize(), mul_size(QueueSlots(), SLOT_RECORD_SIZE));
}

/* SlotRecord - the buffer of slot i */
static SharedRecord *
SlotRecord(int i)
{
	return (SharedRecord *) ((char *) queue + SlotsSize() + (Size) i * SLOT_RECORD_SIZE);
}

/* LogQueueShmemInit - create or attach the queue (shmem_startup_hook) */
void
LogQueueShmemInit(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	queue = ShmemInitStruct("interop log queue", LogQueueShmemSize(), &found);
	if (!found)
	{
		memset(queue, 0, LogQueueShmemSize());
		SpinLockInit(&queue->mutex);
		queue->nslots = QueueSlots();
	}
	LWLockRelease(AddinShmemInitLock);
}

/* SetSyncLatch - the sync worker announces (or withdraws) its latch */
void
SetSyncLatch(Latch *latch)
{
	if (queue == NULL)
		return;
	SpinLockAcquire(&queue->mutex);
	queue->sync_latch = latch;
	SpinLockRelease(&queue->mutex);
}

/* WakeSyncWorker - set the sync worker's latch, if it runs */
void
WakeSyncWorker(void)
{
	Latch	   *latch;

	if (queue == NULL)
		return;
	SpinLockAcquire(&queue->mutex);
	latch = queue->sync_latch;
	SpinLockRelease(&queue->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/* MySlot - this process's slot in the queue */
static int
MySlot(void)
{
	return MyProcSlot();
}

/* RecordSize - the bytes a record takes in shared memory */
static Size
RecordSize(const ExchangeLog *l)
{
	Size		size = offsetof(SharedRecord, data) + 1;

	for (int i = 0; i < RECORD_STRINGS; i++)
	{
		const char *s = *RecordString(l, i);

		if (s != NULL)
			size += strlen(s) + 1;
	}
	return size;
}

/* CopyRecord - the record into rec, which has room for RecordSize(l) */
static void
CopyRecord(const ExchangeLog *l, SharedRecord *rec)
{
	char	   *p;

	memset(rec, 0, offsetof(SharedRecord, data));
	rec->status = l->status;
	rec->row_count = l->row_count;
	rec->duration_ms = l->duration_ms;
	rec->replay_of = l->replay_of;
	rec->consent_id = l->consent_id;
	rec->at = l->at ? l->at : GetCurrentTimestamp();
	p = rec->data + 1;			/* offset 0 means NULL */
	for (int i = 0; i < RECORD_STRINGS; i++)
	{
		const char *s = *RecordString(l, i);
		size_t		len;

		if (s == NULL)
			continue;
		len = strlen(s) + 1;
		rec->offset[i] = p - rec->data;
		memcpy(p, s, len);
		p += len;
	}
}

/* RecordSegment - a new segment holding the record */
static dsm_segment *
RecordSegment(const ExchangeLog *l)
{
	dsm_segment *seg = dsm_create(RecordSize(l), 0);

	CopyRecord(l, dsm_segment_address(seg));
	return seg;
}

/* ReadRecord - the ExchangeLog view of a record in shared memory */
static void
ReadRecord(SharedRecord *rec, ExchangeLog *l)
{
	memset(l, 0, sizeof(*l));
	for (int i = 0; i < RECORD_STRINGS; i++)
		*RecordString(l, i) = rec->offset[i] ? rec->data + rec->offset[i] : NULL;
	l->status = rec->status;
	l->row_count = rec->row_count;
	l->duration_ms = rec->duration_ms;
	l->replay_of = rec->replay_of;
	l->consent_id = rec->consent_id;
	l->at = rec->at;
}

/*
 * HandToWriter - give the record to the log writer and wait until it is
 * committed: l, copied into this process's slot, or when seg is not NULL,
 * the record in that segment.  Returns the record as the writer left it,
 * or NULL, with nothing handed over, when no writer serves this database,
 * or when the writer stopped before taking the record.
 *
 * A segment is pinned before it is handed over and the writer unpins it
 * once written, so the wait can be interrupted (a cancel, a terminate):
 * the record is then still written, after this backend has gone on.  A
 * slot left busy that way (its buffer or its segment) is reused only once
 * the writer is done with it.
 */
static SharedRecord *
HandToWriter(const ExchangeLog *l, dsm_segment *seg)
{
	LogSlot    *slot;
	Latch	   *writer;
	int			state;
	bool		copied = false;

	if (queue == NULL)
		return NULL;
	slot = &queue->slots[MySlot()];
	for (;;)
	{
		SpinLockAcquire(&queue->mutex);
		writer = queue->writer_latch;
		if (writer == NULL || queue->writer_db != MyDatabaseId)
		{
			SpinLockRelease(&queue->mutex);
			return NULL;
		}
		if (slot->state == SLOT_DONE)
			slot->state = SLOT_FREE;	/* an earlier owner's, acknowledged */
		if (slot->state == SLOT_FREE && seg == NULL && !copied)
		{
			/* only this process hands over through its slot: fill it unlocked */
			SpinLockRelease(&queue->mutex);
			CopyRecord(l, SlotRecord(MySlot()));
			copied = true;
			continue;
		}
		if (slot->state == SLOT_FREE)
		{
			if (seg != NULL)
				dsm_pin_segment(seg);
			slot->in_slot = seg == NULL;
			slot->handle = seg != NULL ? dsm_segment_handle(seg) : 0;
			slot->latch = MyLatch;
			slot->state = SLOT_PENDING;
			SpinLockRelease(&queue->mutex);
			break;
		}
		/* an earlier owner's record, not written yet: let the writer take it */
		slot->latch = MyLatch;
		SpinLockRelease(&queue->mutex);
		SetLatch(writer);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	SetLatch(writer);

	for (;;)
	{
		SpinLockAcquire(&queue->mutex);
		state = slot->state;
		if (state == SLOT_PENDING && queue->writer_latch == NULL)
		{
			/* the writer stopped before taking it: take it back */
			slot->state = state = SLOT_FREE;
		}
		else if (state == SLOT_DONE)
			slot->state = SLOT_FREE;
		SpinLockRelease(&queue->mutex);
		if (state == SLOT_DONE)
			return seg != NULL ? dsm_segment_address(seg) : SlotRecord(MySlot());
		if (state == SLOT_FREE)
		{
			if (seg != NULL)
				dsm_unpin_segment(dsm_segment_handle(seg));
			return NULL;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		/* the pinned segment outlives an ERROR here: the writer still writes it */
		CHECK_FOR_INTERRUPTS();
	}
}

/* StartOneShotWriter - a background worker that writes one record and exits */
static void
StartOneShotWriter(dsm_segment *seg)
{
	BackgroundWorker w;
	BackgroundWorkerHandle *handle;

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(w.bgw_library_name, BGW_MAXLEN, "interop");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "OneShotLogWriterMain");
	snprintf(w.bgw_name, BGW_MAXLEN, "interop log writer for PID %d", MyProcPid);
	snprintf(w.bgw_type, BGW_MAXLEN, "interop log writer");
	w.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(seg));
	memcpy(w.bgw_extra, &MyDatabaseId, sizeof(Oid));
	w.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&w, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("no background worker slot is free to write interop.message_log"),
				 errhint("Raise max_worker_processes, or preload the library (shared_preload_libraries = 'interop') so the log writer runs.")));
	if (WaitForBackgroundWorkerShutdown(handle) != BGWH_STOPPED)
		ereport(ERROR,
				(errcode(ERRCODE_ADMIN_SHUTDOWN),
				 errmsg("the log writer did not finish")));
}

/*
 * LogExchangeDurably - write and commit a record outside the caller's
 * transaction, by the log writer or a one-shot worker; returns its id.
 * Raises an ERROR when the record could not be committed.
 */
int64
LogExchangeDurably(const ExchangeLog *l)
{
	dsm_segment *seg = NULL;
	SharedRecord *rec = NULL;
	int64		id;

	if (RecordSize(l) <= SLOT_RECORD_SIZE)
		rec = HandToWriter(l, NULL);
	if (rec == NULL)
	{
		seg = RecordSegment(l);
		rec = HandToWriter(l, seg);
	}
	if (rec == NULL)
	{
		StartOneShotWriter(seg);
		rec = dsm_segment_address(seg);
	}
	if (!rec->written)
		ereport(ERROR,
				(errcode(rec->sqlerrcode ? rec->sqlerrcode : ERRCODE_INTERNAL_ERROR),
				 errmsg("could not write the exchange with %s to interop.message_log",
						l->peer ? l->peer : "a peer"),
				 rec->error[0] ? errdetail("%s", rec->error) : errdetail("The server log has the log writer's error."),
				 errhint("The answer is withheld: nothing is returned unlogged.")));
	id = rec->id;
	if (seg != NULL)
		dsm_detach(seg);
	return id;
}

/*
 * LogExchangeAutonomously - the same, for use while an ERROR is on its way:
 * a record that cannot be written is a WARNING, so that the caller's own
 * error still reaches the user.
 */
void
LogExchangeAutonomously(const ExchangeLog *l)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		(void) LogExchangeDurably(l);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("the failed exchange with %s could not be written to interop.message_log: %s",
						l->peer ? l->peer : "a peer", edata->detail ? edata->detail : edata->message),
				 errhint("The call's own error follows; the provider's log still has the exchange.")));
	}
	PG_END_TRY();
}

/*
 * NoteWritten - a record committed: acknowledged, unless
 * interop.require_synchronous_log is on and no synchronous standby
 * confirmed the commit (LastCommitDurable), when the call that waits for
 * it fails instead of returning what a failover could take away
 */
static void
NoteWritten(SharedRecord *rec)
{
	if (LastCommitDurable())
	{
		rec->written = true;
		return;
	}
	rec->sqlerrcode = ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
	strlcpy(rec->error, "The record was committed on this node, but no synchronous standby confirmed it (interop.require_synchronous_log is on).",
			sizeof(rec->error));
}

/* WriteOneRecord - insert one record in a transaction of its own */
static void
WriteOneRecord(SharedRecord *rec)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		ExchangeLog l;

		BeginWorkerTransaction();
		ReadRecord(rec, &l);
		rec->id = LogExchange(&l);
		EndWorkerTransaction();
		NoteWritten(rec);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		rec->sqlerrcode = edata->sqlerrcode;
		strlcpy(rec->error, edata->message, sizeof(rec->error));
		ereport(LOG,
				(errmsg("interop log writer: could not write a record: %s", edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

/*
 * WriteRecords - insert the records, in one transaction when they all go
 * in; otherwise each in its own, so that one bad record fails alone.
 */
static void
WriteRecords(SharedRecord **recs, int n)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool batch_ok = false;

	if (n > 1)
	{
		PG_TRY();
		{
			BeginWorkerTransaction();
			for (int i = 0; i < n; i++)
			{
				ExchangeLog l;

				ReadRecord(recs[i], &l);
				recs[i]->id = LogExchange(&l);
			}
			EndWorkerTransaction();
			batch_ok = true;
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(cxt);
			EmitErrorReport();
			FlushErrorState();
			AbortCurrentTransaction();
		}
		PG_END_TRY();
		if (batch_ok)
		{
			for (int i = 0; i < n; i++)
				NoteWritten(recs[i]);
			return;
		}
	}

	for (int i = 0; i < n; i++)
		WriteOneRecord(recs[i]);
}

/* OneShotLogWriterMain - a dynamic worker: write one record, commit, exit */
void
OneShotLogWriterMain(Datum arg)
{
	Oid			dboid;
	dsm_segment *seg;
	SharedRecord *rec;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	WorkerConnect(dboid, "interop log writer");
	CurrentResourceOwner = ResourceOwnerCreate(NULL, "interop log writer");
	seg = dsm_attach(DatumGetUInt32(arg));
	if (seg == NULL)
		elog(ERROR, "interop log writer: the record is gone");
	rec = dsm_segment_address(seg);
	pgstat_report_activity(STATE_RUNNING, "writing an exchange to interop.message_log");
	WriteRecords(&rec, 1);
	dsm_detach(seg);
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}

/* LogQueueDepth - records handed over and not yet taken by the log writer */
int
LogQueueDepth(void)
{
	int			n = 0;

	if (queue == NULL)
		return 0;
	SpinLockAcquire(&queue->mutex);
	for (int i = 0; i < queue->nslots; i++)
		if (queue->slots[i].state == SLOT_PENDING)
			n++;
	SpinLockRelease(&queue->mutex);
	return n;
}

/* RegisterLogWriter - the log writer, when the library is preloaded */
void
RegisterLogWriter(void)
{
	RegisterInteropWorker("LogWriterMain", "interop log writer", "interop log writer", (Datum) 0);
}

static volatile sig_atomic_t writer_stop = false;

/* WriterSigterm - finish the batch in hand, then exit */
static void
WriterSigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	writer_stop = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/* WriterDetach - no more hand-overs: waiters take pending records back */
static void
WriterDetach(int code, Datum arg)
{
	SpinLockAcquire(&queue->mutex);
	queue->writer_latch = NULL;
	SpinLockRelease(&queue->mutex);
	for (int i = 0; i < queue->nslots; i++)
		if (queue->slots[i].state == SLOT_PENDING && queue->slots[i].latch)
			SetLatch(queue->slots[i].latch);
}

/*
 * LogWriterMain - the log writer: wait for hand-overs, write them in one
 * transaction, acknowledge.  It serves hand-overs only while the extension
 * is installed in interop.database, and checks every 5 s until it is.
 */
void
LogWriterMain(Datum arg)
{
	SharedRecord **recs;
	dsm_segment **segs;
	Latch	  **waiters;
	int		   *taken;
	bool	   *in_slot;

	WorkerSetSigterm(WriterSigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	WorkerConnect(InvalidOid, "interop log writer");
	CurrentResourceOwner = ResourceOwnerCreate(NULL, "interop log writer");

	recs = palloc(sizeof(SharedRecord *) * queue->nslots);
	segs = palloc(sizeof(dsm_segment *) * queue->nslots);
	waiters = palloc(sizeof(Latch *) * queue->nslots);
	taken = palloc(sizeof(int) * queue->nslots);
	in_slot = palloc(sizeof(bool) * queue->nslots);

	while (!writer_stop && !ExtensionInstalled())
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 5000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	if (writer_stop)
		WorkerExit();

	before_shmem_exit(WriterDetach, (Datum) 0);
	SpinLockAcquire(&queue->mutex);
	queue->writer_db = MyDatabaseId;
	queue->writer_latch = MyLatch;
	SpinLockRelease(&queue->mutex);
	ereport(LOG, (errmsg("interop log writer ready in database \"%s\"", interop_database)));

	for (;;)
	{
		int			n = 0;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		SpinLockAcquire(&queue->mutex);
		for (int i = 0; i < queue->nslots; i++)
			if (queue->slots[i].state == SLOT_PENDING)
			{
				queue->slots[i].state = SLOT_TAKEN;
				taken[n] = i;
				in_slot[n] = queue->slots[i].in_slot;
				segs[n] = (dsm_segment *) (uintptr_t) queue->slots[i].handle;
				waiters[n] = queue->slots[i].latch;
				n++;
			}
		SpinLockRelease(&queue->mutex);

		if (n > 0)
		{
			int			m = 0;

			pgstat_report_activity(STATE_RUNNING, "writing exchanges to interop.message_log");
			for (int i = 0; i < n; i++)
			{
				dsm_handle	h = (dsm_handle) (uintptr_t) segs[i];

				if (in_slot[i])
				{
					segs[i] = NULL;
					recs[m++] = SlotRecord(taken[i]);
					continue;
				}
				segs[i] = dsm_attach(h);
				if (segs[i] == NULL)
					elog(LOG, "interop log writer: a handed-over record is gone");
				else
					recs[m++] = dsm_segment_address(segs[i]);
			}
			WriteRecords(recs, m);
			SpinLockAcquire(&queue->mutex);
			for (int i = 0; i < n; i++)
				queue->slots[taken[i]].state = SLOT_DONE;
			SpinLockRelease(&queue->mutex);
			for (int i = 0; i < n; i++)
			{
				if (segs[i] != NULL)
				{
					dsm_unpin_segment(dsm_segment_handle(segs[i]));
					dsm_detach(segs[i]);
				}
				SetLatch(waiters[i]);
			}
			pgstat_report_activity(STATE_IDLE, NULL);
			continue;			/* look again before sleeping */
		}
		if (writer_stop)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1L, PG_WAIT_EXTENSION);
	}
	WorkerExit();
}
