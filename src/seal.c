/*-------------------------------------------------------------------------
 *
 * seal.c
 *	  Seals over interop.message_log and interop.consent_log, their
 *	  verification, and pruning by whole sealed batches.
 *
 * A seal covers every record of one log whose id is in (after, upto]: the
 * previous seal of that log ends at "after", so the seals of a log tile its
 * id space without gaps.  Ids of aborted inserts are simply absent.  Before
 * it reads the records, the sealer waits for every transaction that was
 * inserting into the log when it read the id sequence (WaitForLockers, as
 * CREATE INDEX does), so no record with an id in the range can commit after
 * the seal: late commits cannot slip under a seal.
 *
 * Each record's leaf hash is SHA-256(0x00 || serialisation), where the
 * serialisation lists a fixed set of columns, each as a presence byte, a
 * 4-byte big-endian length and bytes: strings as stored, numbers and times
 * in their binary send form, so that no setting (DateStyle, TimeZone,
 * client_encoding, extra_float_digits) changes a hash.  The seal keeps the
 * (id, leaf hash) pairs, and signs with the node key a payload holding the
 * Merkle root over the leaves (RFC 6962 style: inner node SHA-256(0x01 ||
 * left || right), an odd last node promoted) and the SHA-256 of the
 * previous seal's JWS: one chain over all seals of the node.
 *
 * verify_log() checks every seal's signature (by the node key it names,
 * kept in interop.node_key across key changes), its row against its signed
 * payload, the chain, and the leaves against the root; then compares the
 * records with the leaves and names each record changed, deleted or
 * inserted.  prune_log() deletes the records of whole seals and appends a
 * signed "prune" entry to the chain, so pruned ranges verify as pruned.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include <openssl/evp.h>
#include <openssl/pem.h>

#define HASH_LEN 32
#define LEAF_LEN (8 + HASH_LEN)	/* id (big-endian) and leaf hash */
#define FETCH_ROWS 2000

/*
 * How much older than the seal before it a record may be dated.  A record
 * with an id after a seal's range was inserted after that seal read the id
 * sequence; its time is when the exchange happened, which a consumer sets
 * before it hands the record to the log writer.  Ten minutes is far more
 * than that hand-over takes (a log that cannot be written holds up the
 * seal too), and far less than a backdating that matters.
 */
#define RECORD_DATE_SLACK (10 * 60 * USECS_PER_SEC)

/* leeway for the clocks of the TSA and this node */
#define TIMESTAMP_SKEW (5 * 60 * USECS_PER_SEC)

/* a sealed log: its name and the columns its records are hashed over */
typedef struct SealedLog
{
	const char *name;
	const char *columns;
} SealedLog;

static const SealedLog sealed_logs[] = {
	{"message_log",
		"id, at, direction, peer, service, purpose, legal_basis, subject, jti, request_hash, "
		"request, response, response_hash, status, error_code, error_message, row_count, duration_ms, client, "
	"consent_id, replay_of"},
	{"consent_log",
		"id, at, consent_id, event, subject, consumer, service, purpose, valid_until, evidence, role"}
};
#define NUM_LOGS lengthof(sealed_logs)

/* prune_log() is deleting: the append-only trigger lets it */
static bool pruning = false;

/* ---- hashing ---- */

/* when set, the bytes a leaf hash is over are kept here too (evidence()) */
static StringInfo leaf_preimage = NULL;

/* Digest - bytes into a leaf hash (and into leaf_preimage) */
static void
Digest(EVP_MD_CTX *md, const void *data, size_t len)
{
	EVP_DigestUpdate(md, data, len);
	if (leaf_preimage != NULL)
		appendBinaryStringInfo(leaf_preimage, data, len);
}

/* HashField - one column: presence byte, 4-byte big-endian length, bytes */
static void
HashField(EVP_MD_CTX *md, const char *data, uint32 len)
{
	unsigned char head[5];

	head[0] = 1;
	head[1] = (len >> 24) & 0xff;
	head[2] = (len >> 16) & 0xff;
	head[3] = (len >> 8) & 0xff;
	head[4] = len & 0xff;
	Digest(md, head, 5);
	Digest(md, data, len);
}

/* per column: how to turn it into bytes */
typedef struct ColumnCodec
{
	Oid			type;
	bool		raw;			/* a varlena string: its bytes as stored */
	bool		binary;			/* the type's send function */
	bool		header_ref;		/* a JWS that may refer to interop.message_header */
	FmgrInfo	proc;			/* send or output function */
} ColumnCodec;

static ColumnCodec *
ColumnCodecs(TupleDesc desc)
{
	ColumnCodec *codecs = palloc0(sizeof(ColumnCodec) * desc->natts);

	for (int i = 0; i < desc->natts; i++)
	{
		Oid			type = getBaseType(TupleDescAttr(desc, i)->atttypid);
		Oid			func;
		bool		varlena;

		codecs[i].type = type;
		switch (type)
		{
			case TEXTOID:
			case VARCHAROID:
			case BPCHAROID:
				codecs[i].raw = true;
				codecs[i].header_ref = strcmp(NameStr(TupleDescAttr(desc, i)->attname), "request") == 0 ||
					strcmp(NameStr(TupleDescAttr(desc, i)->attname), "response") == 0;
				continue;
			case INT2OID:
			case INT4OID:
			case INT8OID:
			case FLOAT4OID:
			case FLOAT8OID:
			case TIMESTAMPTZOID:
			case TIMESTAMPOID:
			case DATEOID:
			case UUIDOID:
			case BOOLOID:
				getTypeBinaryOutputInfo(type, &func, &varlena);
				codecs[i].binary = true;
				break;
			default:
				/* name, member_id and the like: their canonical text */
				getTypeOutputInfo(type, &func, &varlena);
				break;
		}
		fmgr_info(func, &codecs[i].proc);
	}
	return codecs;
}

/*
 * verify_log(): the digests of the intact rows of interop.message_header, sorted,
 * and whether the last record RecordLeaf() hashed refers to another one
 */
static char **intact_headers = NULL;
static int	nintact_headers = 0;
static bool record_lost_header = false;

static int
CompareDigests(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* HeaderIntact - whether a stored JWS's header reference names an intact header */
static bool
HeaderIntact(const char *data, size_t len)
{
	const char *ref = JwsHeaderRef(data, len);
	char		digest[44];
	char	   *key = digest;

	if (ref == NULL)
		return true;
	memcpy(digest, ref, 43);
	digest[43] = '\0';
	return bsearch(&key, intact_headers, nintact_headers, sizeof(char *), CompareDigests) != NULL;
}

/* RecordLeaf - the leaf hash of a record; sets *id */
static void
RecordLeaf(HeapTuple tup, TupleDesc desc, ColumnCodec *codecs, EVP_MD_CTX *md,
		   int64 *id, unsigned char *leaf)
{
	static const unsigned char zero = 0;

	if (!EVP_DigestInit_ex(md, EVP_sha256(), NULL))
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not compute SHA-256", NULL);
	EVP_DigestUpdate(md, &zero, 1);	/* the leaf prefix: not part of the record's bytes */
	record_lost_header = false;
	for (int i = 0; i < desc->natts; i++)
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, i + 1, desc, &isnull);

		if (i == 0)
			*id = DatumGetInt64(d);
		if (isnull)
		{
			Digest(md, &zero, 1);
			continue;
		}
		if (codecs[i].raw)
		{
			struct varlena *v = PG_DETOAST_DATUM_PACKED(d);

			HashField(md, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
			if (codecs[i].header_ref && intact_headers != NULL &&
				!HeaderIntact(VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v)))
				record_lost_header = true;
			if ((Pointer) v != DatumGetPointer(d))
				pfree(v);
		}
		else if (codecs[i].binary)
		{
			bytea	   *b = SendFunctionCall(&codecs[i].proc, d);

			HashField(md, VARDATA(b), VARSIZE(b) - VARHDRSZ);
			pfree(b);
		}
		else
		{
			char	   *s = OutputFunctionCall(&codecs[i].proc, d);

			HashField(md, s, strlen(s));
			pfree(s);
		}
	}
	if (!EVP_DigestFinal_ex(md, leaf, NULL))
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not compute SHA-256", NULL);
}

/* MerkleRoot - root over n leaf entries (id, hash) of LEAF_LEN bytes */
static void
MerkleRoot(const unsigned char *leaves, int64 n, unsigned char *root)
{
	unsigned char *level;
	unsigned char buf[1 + 2 * HASH_LEN];

	if (n == 0)
	{
		Sha256("", 0, root);
		return;
	}
	level = palloc(n * HASH_LEN);
	for (int64 i = 0; i < n; i++)
		memcpy(level + i * HASH_LEN, leaves + i * LEAF_LEN + 8, HASH_LEN);
	buf[0] = 1;
	while (n > 1)
	{
		int64		m = 0;

		for (int64 i = 0; i < n; i += 2)
		{
			if (i + 1 < n)
			{
				memcpy(buf + 1, level + i * HASH_LEN, 2 * HASH_LEN);
				Sha256(buf, sizeof(buf), level + m * HASH_LEN);
			}
			else
				memmove(level + m * HASH_LEN, level + i * HASH_LEN, HASH_LEN);
			m++;
		}
		n = m;
	}
	memcpy(root, level, HASH_LEN);
	pfree(level);
}

static void
PutInt64(unsigned char *p, int64 v)
{
	for (int i = 7; i >= 0; i--)
	{
		p[i] = v & 0xff;
		v >>= 8;
	}
}

static int64
GetInt64(const unsigned char *p)
{
	uint64		v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return (int64) v;
}

/* ---- reading a log's records in id order ---- */

typedef struct RecordCursor
{
	Portal		portal;
	TupleDesc	desc;
	ColumnCodec *codecs;
	EVP_MD_CTX *md;
	uint64		pos;
	uint64		count;
	SPITupleTable *tuptable;
	MemoryContext cxt;			/* per-batch memory */
} RecordCursor;

static void
OpenRecords(RecordCursor *rc, const SealedLog *log, int64 after, int64 upto)
{
	Datum		values[2] = {Int64GetDatum(after), Int64GetDatum(upto)};
	Oid			types[2] = {INT8OID, INT8OID};
	char	   *sql = psprintf("SELECT %s FROM interop.%s WHERE id > $1 AND id <= $2 ORDER BY id",
							   log->columns, log->name);

	memset(rc, 0, sizeof(*rc));
	rc->portal = SPI_cursor_open_with_args(NULL, sql, 2, types, values, NULL, false, 0);
	rc->md = NewSha256();
	rc->cxt = AllocSetContextCreate(CurrentMemoryContext, "interop seal batch", ALLOCSET_DEFAULT_SIZES);
}

/* NextRecord - the next record's id and leaf (and time, when at is given); false at the end */
static bool
NextRecordAt(RecordCursor *rc, int64 *id, unsigned char *leaf, TimestampTz *at)
{
	MemoryContext old;

	if (rc->pos >= rc->count)
	{
		if (rc->tuptable)
			SPI_freetuptable(rc->tuptable);
		rc->tuptable = NULL;
		MemoryContextReset(rc->cxt);
		SPI_cursor_fetch(rc->portal, true, FETCH_ROWS);
		rc->count = SPI_processed;
		rc->pos = 0;
		if (rc->count == 0)
			return false;
		rc->tuptable = SPI_tuptable;
		if (rc->codecs == NULL)
		{
			old = MemoryContextSwitchTo(TopTransactionContext);
			rc->desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
			rc->codecs = ColumnCodecs(rc->desc);
			MemoryContextSwitchTo(old);
		}
	}
	old = MemoryContextSwitchTo(rc->cxt);
	if (at != NULL)
	{
		bool		isnull;
		Datum		d = heap_getattr(rc->tuptable->vals[rc->pos], 2, rc->desc, &isnull);

		*at = isnull ? DT_NOBEGIN : DatumGetTimestampTz(d);
	}
	RecordLeaf(rc->tuptable->vals[rc->pos++], rc->desc, rc->codecs, rc->md, id, leaf);
	MemoryContextSwitchTo(old);
	return true;
}

static bool
NextRecord(RecordCursor *rc, int64 *id, unsigned char *leaf)
{
	return NextRecordAt(rc, id, leaf, NULL);
}

static void
CloseRecords(RecordCursor *rc)
{
	if (rc->tuptable)
		SPI_freetuptable(rc->tuptable);
	SPI_cursor_close(rc->portal);
	EVP_MD_CTX_free(rc->md);
	MemoryContextDelete(rc->cxt);
}

/* ---- sealing ---- */

static char *
B64(const unsigned char *h)
{
	return Base64UrlEncode(h, HASH_LEN);
}

/* QueryInt64 - a one-value query; *isnull when NULL or no row */
static int64
QueryInt64(const char *sql, int nargs, Oid *types, Datum *values, bool *isnull)
{
	int			ret = SPI_execute_with_args(sql, nargs, types, values, NULL, false, 1);

	if (ret < 0)
		elog(ERROR, "could not run \"%s\": %s", sql, SPI_result_code_string(ret));
	if (SPI_processed == 0)
	{
		*isnull = true;
		return 0;
	}
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull));
}

/* LastSealHash - b64url SHA-256 of the newest seal's JWS, or NULL */
static char *
LastSealHash(void)
{
	int			ret = SPI_execute("SELECT jws FROM interop.log_seal ORDER BY id DESC LIMIT 1", false, 1);
	char	   *jws;
	unsigned char h[HASH_LEN];

	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.log_seal: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return NULL;
	jws = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	Sha256(jws, strlen(jws), h);
	return B64(h);
}

/* NodeKeyId - b64url SHA-256 of the node's public key (SubjectPublicKeyInfo DER) */
static char *
NodeKeyId(void)
{
	NodeState  *st = GetNodeState();
	unsigned char *der = NULL;
	int			len = i2d_PUBKEY(st->key, &der);
	unsigned char h[HASH_LEN];

	if (len <= 0)
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not encode the node public key", NULL);
	Sha256(der, len, h);
	OPENSSL_free(der);
	return B64(h);
}

/* Quote - a JSON string literal */
static char *
Quote(const char *s)
{
	StringInfoData buf;

	initStringInfo(&buf);
	escape_json(&buf, s);
	return buf.data;
}

/* InsertSeal - sign the payload and append the seal */
static int64
InsertSeal(const char *log, const char *kind, int64 after, int64 upto, int64 count,
		   const unsigned char *leaves, const char *root, const char *prev,
		   TimestampTz last_at, const char *extra)
{
	NodeState  *st = GetNodeState();
	TimestampTz now = GetCurrentTimestamp();
	char	   *payload;
	char	   *jws;
	Datum		values[11];
	char		nulls[12] = "           ";
	Oid			types[11] = {TEXTOID, TEXTOID, INT8OID, INT8OID, INT8OID, BYTEAOID, TEXTOID,
	TEXTOID, TIMESTAMPTZOID, TEXTOID, TIMESTAMPTZOID};
	int64		nleaves = leaves ? count : 0;
	bytea	   *lv = palloc(VARHDRSZ + nleaves * LEAF_LEN);
	bool		isnull;
	int64		id;

	payload = psprintf("{\"typ\":\"interop-seal\",\"node\":%s,\"kid\":%s,\"log\":%s,\"kind\":%s,"
					   "\"after\":" INT64_FORMAT ",\"upto\":" INT64_FORMAT ",\"count\":" INT64_FORMAT ","
					   "\"root\":%s,\"prev\":%s,\"last_at\":%s,\"sealed_at\":%s%s}",
					   Quote(st->member_id), Quote(NodeKeyId()), Quote(log), Quote(kind),
					   after, upto, count, root ? Quote(root) : "null", prev ? Quote(prev) : "null",
					   last_at ? Quote(timestamptz_to_str(last_at)) : "null",
					   Quote(timestamptz_to_str(now)),
					   psprintf("%s%s", TimestampingOn() ? ",\"timestamped\":true" : "", extra ? extra : ""));
	jws = JwsSignJson(payload, strlen(payload), JWS_TYP_SEAL);

	SET_VARSIZE(lv, VARHDRSZ + nleaves * LEAF_LEN);
	if (nleaves > 0)
		memcpy(VARDATA(lv), leaves, nleaves * LEAF_LEN);
	values[0] = CStringGetTextDatum(log);
	values[1] = CStringGetTextDatum(kind);
	values[2] = Int64GetDatum(after);
	values[3] = Int64GetDatum(upto);
	values[4] = Int64GetDatum(count);
	values[5] = PointerGetDatum(lv);
	values[6] = root ? CStringGetTextDatum(root) : (Datum) 0;
	if (!root)
		nulls[6] = 'n';
	values[7] = prev ? CStringGetTextDatum(prev) : (Datum) 0;
	if (!prev)
		nulls[7] = 'n';
	values[8] = TimestampTzGetDatum(now);
	values[9] = CStringGetTextDatum(jws);
	values[10] = TimestampTzGetDatum(last_at);
	if (last_at == 0)
		nulls[10] = 'n';
	if (leaves == NULL)
		nulls[5] = 'n';
	if (SPI_execute_with_args("INSERT INTO interop.log_seal (log, kind, after_id, upto_id, record_count, "
							  "leaves, root, prev, sealed_at, jws, last_at) "
							  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
							  11, types, values, nulls, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not write interop.log_seal");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return id;
}

/* LastRecordTime - the latest "at" of the records in (after, upto], or 0 */
static TimestampTz
LastRecordTime(const SealedLog *log, int64 after, int64 upto)
{
	Datum		values[2] = {Int64GetDatum(after), Int64GetDatum(upto)};
	Oid			types[2] = {INT8OID, INT8OID};
	bool		isnull;
	Datum		d;

	if (SPI_execute_with_args(psprintf("SELECT max(at) FROM interop.%s WHERE id > $1 AND id <= $2", log->name),
							  2, types, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.%s", log->name);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetTimestampTz(d);
}

/* SealOne - seal the new records of one log; returns how many */
static int64
SealOne(const SealedLog *log)
{
	Oid			relid;
	LOCKTAG		tag;
	bool		isnull;
	int64		after,
				upto;
	RecordCursor rc;
	StringInfoData leaves;
	int64		n = 0;
	int64		id;
	unsigned char leaf[HASH_LEN];
	unsigned char root[HASH_LEN];
	Datum		arg;
	Oid			argtype = TEXTOID;

	relid = get_relname_relid(log->name, get_namespace_oid("interop", false));
	arg = CStringGetTextDatum(log->name);
	after = QueryInt64("SELECT max(upto_id) FROM interop.log_seal WHERE log = $1 AND kind = 'seal'",
					   1, &argtype, &arg, &isnull);
	if (isnull)
		after = 0;
	arg = CStringGetTextDatum(psprintf("interop.%s_id_seq", log->name));
	upto = QueryInt64("SELECT pg_catalog.pg_sequence_last_value($1::regclass)", 1, &argtype, &arg, &isnull);
	if (isnull || upto <= after)
		return 0;

	/*
	 * Every id up to "upto" was taken by a transaction that holds a lock on
	 * the log (an INSERT locks the table before its default takes an id).
	 * Once those have ended, every such record is committed or never will
	 * be.
	 */
	SET_LOCKTAG_RELATION(tag, MyDatabaseId, relid);
	WaitForLockers(tag, ShareLock, false);
	CommandCounterIncrement();

	initStringInfo(&leaves);
	OpenRecords(&rc, log, after, upto);
	while (NextRecord(&rc, &id, leaf))
	{
		unsigned char entry[LEAF_LEN];

		PutInt64(entry, id);
		memcpy(entry + 8, leaf, HASH_LEN);
		appendBinaryStringInfo(&leaves, (char *) entry, LEAF_LEN);
		n++;
	}
	CloseRecords(&rc);
	MerkleRoot((unsigned char *) leaves.data, n, root);
	InsertSeal(log->name, "seal", after, upto, n, (unsigned char *) leaves.data,
			   B64(root), LastSealHash(), LastRecordTime(log, after, upto), NULL);
	return n;
}

/*
 * SealLogs - seal the new records of every log; returns how many were
 * sealed.  Callers are connected to SPI, in a READ COMMITTED transaction.
 */
int64
SealLogs(void)
{
	int64		n = 0;

	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("interop.seal_log() must run in a READ COMMITTED transaction"),
				 errdetail("A seal must see every record committed before it, which a transaction snapshot does not."),
				 errhint("Run it outside an explicit REPEATABLE READ or SERIALIZABLE transaction.")));
	/*
	 * One sealer at a time: the chain is a sequence.  The lock is taken by
	 * the extension's own code, so the workers need no privilege for it;
	 * lock_timeout applies to the wait.
	 */
	LockRelationOid(get_relname_relid("log_seal", get_namespace_oid("interop", false)),
					ShareRowExclusiveLock);
	for (int i = 0; i < NUM_LOGS; i++)
		n += SealOne(&sealed_logs[i]);
	return n;
}

PG_FUNCTION_INFO_V1(interop_seal_log);
/* interop_seal_log - seal now; returns the number of records sealed */
Datum
interop_seal_log(PG_FUNCTION_ARGS)
{
	int64		n;

	RefuseOnStandby("interop.seal_log()");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	n = SealLogs();
	SPI_finish();
	PG_RETURN_INT64(n);
}

/* ---- verification ---- */

typedef struct SealRow
{
	int64		id;
	char	   *log;
	char	   *kind;
	int64		after;
	int64		upto;
	int64		count;
	char	   *root;
	char	   *prev;
	char	   *jws;
	TimestampTz sealed_at;
	TimestampTz not_before;		/* records dated earlier are named (0: no bound) */
	bool		pruned;
	bool		timestamped;	/* made while timestamping was on (its payload says) */
	TimestampTz stamped_at;		/* the time of its checked timestamp token (0: none) */
} SealRow;

typedef struct Problems
{
	Tuplestorestate *store;
	TupleDesc	desc;
	int64		n;
} Problems;

static void
Problem(Problems *p, const char *log, int64 id, const char *fmt,...) pg_attribute_printf(4, 5);

static void
Problem(Problems *p, const char *log, int64 id, const char *fmt,...)
{
	Datum		values[3];
	bool		nulls[3] = {false, id == 0, false};
	StringInfoData buf;
	va_list		args;

	initStringInfo(&buf);
	for (;;)
	{
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	values[0] = CStringGetTextDatum(log);
	values[1] = Int64GetDatum(id);
	values[2] = CStringGetTextDatum(buf.data);
	tuplestore_putvalues(p->store, p->desc, values, nulls);
	p->n++;
}

/* PayloadField - a field of a seal payload as text (numbers as written), or NULL */
static char *
PayloadField(Jsonb *jb, const char *key)
{
	JsonbValue	k;
	JsonbValue *v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
	if (v == NULL || v->type == jbvNull)
		return NULL;
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	if (v->type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	return "?";
}

/* NodeKeys - the node's public keys, past and present, by key id */
static List *
NodeKeys(List **kids)
{
	List	   *keys = NIL;

	*kids = NIL;
	if (SPI_execute("SELECT public_key FROM interop.node_key", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.node_key");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *pem = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		EVP_PKEY   *key = PublicKeyFromPEM(pem);
		unsigned char *der = NULL;
		int			len = i2d_PUBKEY(key, &der);
		unsigned char h[HASH_LEN];

		if (len <= 0)
			continue;
		Sha256(der, len, h);
		OPENSSL_free(der);
		keys = lappend(keys, key);
		*kids = lappend(*kids, B64(h));
	}
	return keys;
}

/* JsonOrNull - len bytes of JSON as jsonb, or NULL when they are not JSON */
static Jsonb *
JsonOrNull(const char *raw, size_t len)
{
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *volatile jb = NULL;

	PG_TRY();
	{
		jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(pnstrdup(raw, len))));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		jb = NULL;
	}
	PG_END_TRY();
	return jb;
}

/* SignatureValid - whether the JWS verifies under the key, as a JWS of typ */
static bool
SignatureValid(const char *jws, EVP_PKEY *key, JwsTyp typ)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = false;

	PG_TRY();
	{
		const char *signer;
		size_t		plen;

		(void) JwsVerifyCompact(jws, strlen(jws), key, typ, &signer, &plen);
		ok = true;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
	}
	PG_END_TRY();
	return ok;
}

/*
 * CheckSealSignature - verify the JWS; its payload, or NULL after a
 * problem.  A seal is a JWS of typ "interop-seal"; seals made by 0.1.0
 * (typ "JOSE", which interop.sign() also writes) are accepted only before
 * the first typed seal of the chain (*typed_seen), so a payload signed
 * with sign() can never be added to a chain that 0.2.0 continued.
 */
static Jsonb *
CheckSealSignature(Problems *p, SealRow *s, List *keys, List *kids, bool *typed_seen)
{
	char	   *typ = JwsHeaderTyp(s->jws);
	JwsTyp		expect = JWS_TYP_SEAL;
	const char *dot1 = strchr(s->jws, '.');
	const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	size_t		len;
	char	   *raw;
	Jsonb	   *jb = NULL;
	char	   *kid;
	EVP_PKEY   *key = NULL;
	ListCell   *lk,
			   *li;

	raw = dot2 ? (char *) Base64UrlDecode(dot1 + 1, dot2 - dot1 - 1, &len) : NULL;
	if (raw != NULL)
		jb = JsonOrNull(raw, len);
	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
	{
		Problem(p, "log_seal", s->id, "seal %lld is not a valid JWS", (long long) s->id);
		return NULL;
	}
	kid = PayloadField(jb, "kid");
	forboth(lk, keys, li, kids)
	{
		if (kid && strcmp(kid, (char *) lfirst(li)) == 0)
			key = lfirst(lk);
	}
	if (key == NULL)
	{
		Problem(p, "log_seal", s->id, "seal %lld is signed by a key this node never had (key id %s)",
				(long long) s->id, kid ? kid : "none");
		return NULL;
	}
	if (typ != NULL && strcmp(typ, JwsTypName(JWS_TYP_SEAL)) == 0)
		*typed_seen = true;
	else if (typ != NULL && strcmp(typ, JwsTypName(JWS_TYP_USER)) == 0 && !*typed_seen)
		expect = JWS_TYP_USER;
	else
	{
		Problem(p, "log_seal", s->id, "seal %lld is not signed as a seal: its typ is %s",
				(long long) s->id, typ ? quote_literal_cstr(typ) : "(none)");
		return NULL;
	}
	if (!SignatureValid(s->jws, key, expect))
	{
		Problem(p, "log_seal", s->id, "the signature of seal %lld does not verify", (long long) s->id);
		return NULL;
	}
	return jb;
}

/* Same - whether a payload field equals a value (both may be NULL) */
static bool
Same(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/*
 * CompareRecords - the records of a seal against its leaves, and their
 * dates against the seal before it
 */
static void
CompareRecords(Problems *p, SealRow *s, const unsigned char *leaves)
{
	const SealedLog *log = NULL;
	RecordCursor rc;
	int64		id;
	unsigned char leaf[HASH_LEN];
	int64		li = 0;
	bool		have;
	TimestampTz at = 0;

	for (int i = 0; i < NUM_LOGS; i++)
		if (strcmp(sealed_logs[i].name, s->log) == 0)
			log = &sealed_logs[i];
	if (log == NULL)
		return;
	OpenRecords(&rc, log, s->after, s->upto);
	have = NextRecordAt(&rc, &id, leaf, &at);
	while (have || li < s->count)
	{
		int64		lid = li < s->count ? GetInt64(leaves + li * LEAF_LEN) : PG_INT64_MAX;

		if (have && s->not_before != 0 && at < s->not_before)
			Problem(p, s->log, id, "record %lld of seal %lld is dated %s, before the seal that precedes it: it was written later with an earlier date",
					(long long) id, (long long) s->id, timestamptz_to_str(at));
		if (have && record_lost_header)
			Problem(p, s->log, id, "record %lld refers to a protected header that interop.message_header no longer holds intact",
					(long long) id);
		if (have && id == lid)
		{
			if (memcmp(leaf, leaves + li * LEAF_LEN + 8, HASH_LEN) != 0)
				Problem(p, s->log, id, "record %lld was changed after seal %lld",
						(long long) id, (long long) s->id);
			li++;
			have = NextRecordAt(&rc, &id, leaf, &at);
		}
		else if (have && id < lid)
		{
			Problem(p, s->log, id, "record %lld was inserted into the range of seal %lld",
					(long long) id, (long long) s->id);
			have = NextRecordAt(&rc, &id, leaf, &at);
		}
		else
		{
			Problem(p, s->log, lid, "record %lld was deleted after seal %lld",
					(long long) lid, (long long) s->id);
			li++;
		}
		CHECK_FOR_INTERRUPTS();
	}
	CloseRecords(&rc);
}

/* VerifySeal - every check of one seal */
static void
VerifySeal(Problems *p, SealRow *s, const char *expected_prev, int64 expected_after,
		   List *keys, List *kids, bool *typed_seen)
{
	Jsonb	   *jb = CheckSealSignature(p, s, keys, kids, typed_seen);
	char		num[3][32];
	Datum		arg = Int64GetDatum(s->id);
	Oid			argtype = INT8OID;
	bytea	   *lv;
	bool		isnull;
	unsigned char root[HASH_LEN];

	if (jb == NULL)
		return;
	s->timestamped = PayloadField(jb, "timestamped") != NULL;
	snprintf(num[0], 32, INT64_FORMAT, s->after);
	snprintf(num[1], 32, INT64_FORMAT, s->upto);
	snprintf(num[2], 32, INT64_FORMAT, s->count);
	if (!Same(PayloadField(jb, "log"), s->log) || !Same(PayloadField(jb, "kind"), s->kind) ||
		!Same(PayloadField(jb, "after"), num[0]) || !Same(PayloadField(jb, "upto"), num[1]) ||
		!Same(PayloadField(jb, "count"), num[2]) || !Same(PayloadField(jb, "root"), s->root) ||
		!Same(PayloadField(jb, "prev"), s->prev))
	{
		Problem(p, "log_seal", s->id, "seal %lld was changed: its row differs from its signed content",
				(long long) s->id);
		return;
	}
	if (!Same(s->prev, expected_prev))
		Problem(p, "log_seal", s->id, "the chain is broken before seal %lld: the seal before it was changed or removed",
				(long long) s->id);
	if (s->after != expected_after)
		Problem(p, "log_seal", s->id, "seal %lld of %s starts after record %lld, but the seal before it ended at %lld: a seal is missing",
				(long long) s->id, s->log, (long long) s->after, (long long) expected_after);
	if (strcmp(s->kind, "seal") != 0)
		return;

	if (SPI_execute_with_args("SELECT leaves FROM interop.log_seal WHERE id = $1", 1, &argtype, &arg,
							  NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read seal %lld", (long long) s->id);
	lv = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull || VARSIZE_ANY_EXHDR(lv) != s->count * LEAF_LEN)
	{
		Problem(p, "log_seal", s->id, "seal %lld has lost its record hashes", (long long) s->id);
		return;
	}
	MerkleRoot((unsigned char *) VARDATA_ANY(lv), s->count, root);
	if (strcmp(B64(root), s->root) != 0)
	{
		Problem(p, "log_seal", s->id, "the record hashes of seal %lld do not match its signed root",
				(long long) s->id);
		return;
	}
	if (!s->pruned)
		CompareRecords(p, s, (unsigned char *) VARDATA_ANY(lv));
}

/*
 * CheckUncovered - the records of a log that no seal vouches for and that
 * cannot be new: ids at or below 0 or below the first seal, ids in a range
 * that prune_log() removed, ids the sequence never issued, and records
 * after the last seal that are dated well before it.  The seals tile the
 * ids from the first seal to the last (VerifySeal names a gap), so these
 * are all the places a planted record can hide.
 */
static void
CheckUncovered(Problems *p, const SealedLog *log, SealRow *seals, uint64 nseals)
{
	int64		first_after = PG_INT64_MAX;
	int64		pruned_upto = 0;
	int64		max_upto = 0;
	TimestampTz newest = 0;
	int64		below;
	int64		issued;
	bool		isnull;
	Datum		values[2];
	Oid			types[2] = {INT8OID, INT8OID};
	Datum		arg;
	Oid			argtype = TEXTOID;
	Portal		portal;

	for (uint64 i = 0; i < nseals; i++)
	{
		SealRow    *s = &seals[i];

		if (strcmp(s->log, log->name) != 0)
			continue;
		if (strcmp(s->kind, "seal") == 0)
		{
			first_after = Min(first_after, s->after);
			newest = s->sealed_at;
		}
		else
			pruned_upto = Max(pruned_upto, s->upto);
		max_upto = Max(max_upto, s->upto);
	}
	below = Max(pruned_upto, first_after == PG_INT64_MAX ? 0 : first_after);
	arg = CStringGetTextDatum(psprintf("interop.%s_id_seq", log->name));
	issued = QueryInt64("SELECT pg_catalog.pg_sequence_last_value($1::regclass)", 1, &argtype, &arg, &isnull);
	if (isnull)
		issued = 0;

	values[0] = Int64GetDatum(below);
	values[1] = Int64GetDatum(max_upto);
	portal = SPI_cursor_open_with_args(NULL, psprintf("SELECT id, at FROM interop.%s WHERE id <= $1 OR id <= 0 OR id > $2 ORDER BY id",
													  log->name),
									   2, types, values, NULL, true, 0);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, FETCH_ROWS);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
			Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);
			TimestampTz at = isnull ? DT_NOBEGIN : DatumGetTimestampTz(d);

			if (id <= 0 || (id > pruned_upto && first_after != PG_INT64_MAX && id <= first_after))
				Problem(p, log->name, id, "record %lld is outside the range of every seal: it was inserted after them",
						(long long) id);
			else if (id <= pruned_upto)
				Problem(p, log->name, id, "record %lld lies in a range that prune_log() removed: it was inserted after the prune",
						(long long) id);
			else if (id > max_upto && id > issued)
				Problem(p, log->name, id, "record %lld has an id that interop.%s_id_seq never issued: it was inserted with a chosen id",
						(long long) id, log->name);
			else if (id > max_upto && newest != 0 && at < newest - RECORD_DATE_SLACK)
				Problem(p, log->name, id, "record %lld is dated %s, before the newest seal of %s, yet no seal covers it",
						(long long) id, timestamptz_to_str(at), log->name);
			CHECK_FOR_INTERRUPTS();
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
}

/* Span - a span of time in words, "3725 s" */
static char *
Span(TimestampTz from, TimestampTz to)
{
	return psprintf(INT64_FORMAT " s", (int64) ((to - from) / USECS_PER_SEC));
}

/*
 * CheckTimestamps - each timestamp token checked again (signed by a TSA
 * that chains to an anchor, over its seal's JWS as it is now), and each
 * run of seals made while timestamping was on judged by the first token
 * that covers it: one that came more than interop.max_timestamp_gap after
 * the oldest seal of the run (or none yet, that long after) is named.
 * Seals are sorted by id.
 */
static void
CheckTimestamps(Problems *p, SealRow *seals, uint64 nseals)
{
	X509_STORE *store = NULL;
	SPITupleTable *tt;
	TimestampTz now = GetCurrentTimestamp();
	int64		gap = (int64) interop_max_timestamp_gap * USECS_PER_SEC;
	int64		first = -1;		/* the oldest seal of the run waiting for a token */
	uint64		j = 0;

	if (SPI_execute("SELECT seal_id, token, gen_time FROM interop.seal_timestamp ORDER BY seal_id",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.seal_timestamp");
	tt = SPI_tuptable;
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tt->vals[r], tt->tupdesc, 1, &isnull));
		bytea	   *token = DatumGetByteaPP(SPI_getbinval(tt->vals[r], tt->tupdesc, 2, &isnull));
		TimestampTz row_time = DatumGetTimestampTz(SPI_getbinval(tt->vals[r], tt->tupdesc, 3, &isnull));
		TimestampTz gen_time;
		unsigned char digest[HASH_LEN];
		char	   *tsa;
		bool		imprint_ok;
		char		why[512];
		SealRow    *s;

		while (j < nseals && seals[j].id < id)
			j++;
		if (j == nseals || seals[j].id != id)
		{
			Problem(p, "seal_timestamp", id, "a timestamp is over seal %lld, which interop.log_seal does not hold: the seal was removed",
					(long long) id);
			continue;
		}
		s = &seals[j];
		if (store == NULL)
			store = LoadTrustStore();
		Sha256(s->jws, strlen(s->jws), digest);
		if (!TsaCheckToken(store, (unsigned char *) VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), digest,
						   &gen_time, &tsa, &imprint_ok, why, sizeof(why)))
		{
			if (!imprint_ok)
				Problem(p, "seal_timestamp", id, "the timestamp of seal %lld is over other content: the seal was changed after it was timestamped",
						(long long) id);
			else
				Problem(p, "seal_timestamp", id, "the timestamp of seal %lld does not verify: %s", (long long) id, why);
			continue;
		}
		if (gen_time != row_time)
		{
			Problem(p, "seal_timestamp", id, "the timestamp of seal %lld was changed: its row says %s, its token %s",
					(long long) id, timestamptz_to_str(row_time), timestamptz_to_str(gen_time));
			continue;
		}
		if (gen_time < s->sealed_at - TIMESTAMP_SKEW)
			Problem(p, "seal_timestamp", id, "seal %lld says it was made at %s, after its timestamp (%s): the seal is post-dated",
					(long long) id, timestamptz_to_str(s->sealed_at), timestamptz_to_str(gen_time));
		s->stamped_at = gen_time;
	}
	if (gap <= 0)
		return;
	for (uint64 i = 0; i < nseals; i++)
	{
		SealRow    *s = &seals[i];

		if (first < 0 && s->timestamped)
			first = (int64) i;
		if (first >= 0 && s->stamped_at != 0)
		{
			SealRow    *f = &seals[first];

			if (s->stamped_at - f->sealed_at > gap)
				Problem(p, "log_seal", f->id, "seals %lld to %lld were first timestamped at %s, %s after seal %lld was made, "
						"longer than interop.max_timestamp_gap (%d s): they could have been rewritten in between",
						(long long) f->id, (long long) s->id, timestamptz_to_str(s->stamped_at),
						Span(f->sealed_at, s->stamped_at), (long long) f->id, interop_max_timestamp_gap);
			first = -1;
		}
	}
	if (first >= 0 && now - seals[first].sealed_at > gap)
		Problem(p, "log_seal", seals[first].id, "seals %lld to %lld have had no timestamp for %s, longer than interop.max_timestamp_gap (%d s)",
				(long long) seals[first].id, (long long) seals[nseals - 1].id,
				Span(seals[first].sealed_at, now), interop_max_timestamp_gap);
}

/*
 * CheckCosignatures - every cosignature of a witness names a seal of the
 * chain, by id and by the hash of its JWS: a newest seal removed, or
 * rewritten and signed again, no longer matches what a witness cosigned.
 * The cosignatures are append-only and numbered: one removed from the
 * middle leaves a gap in their ids.
 */
static void
CheckCosignatures(Problems *p, SealRow *seals, uint64 nseals)
{
	int64		expected = 0;

	if (SPI_execute("SELECT id, witness::text, seal_id, head, cosigned_at, jws, "
					"(SELECT last_value FROM interop.cosignature_id_seq) "
					"FROM interop.cosignature ORDER BY id", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.cosignature");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	t = SPI_tuptable->vals[r];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
		char	   *witness = SPI_getvalue(t, d, 2);
		int64		seal_id = DatumGetInt64(SPI_getbinval(t, d, 3, &isnull));
		char	   *head = SPI_getvalue(t, d, 4);
		char	   *at = SPI_getvalue(t, d, 5);
		char	   *why = CosignatureProblem(SPI_getvalue(t, d, 6), witness, seal_id, head);
		SealRow    *s = NULL;

		if (id != expected + 1 && expected >= 0)
			Problem(p, "cosignature", id, "cosignatures %lld to %lld are missing: somebody removed them",
					(long long) expected + 1, (long long) id - 1);
		expected = id;
		if (why != NULL)
		{
			Problem(p, "cosignature", id, "cosignature %lld of seal %lld by witness %s is not valid: %s",
					(long long) id, (long long) seal_id, witness, why);
			continue;
		}
		for (uint64 i = 0; i < nseals && s == NULL; i++)
			if (seals[i].id == seal_id)
				s = &seals[i];
		if (s == NULL)
			Problem(p, "log_seal", seal_id,
					"seal %lld is missing: witness %s cosigned it at %s; the seals from it on were removed",
					(long long) seal_id, witness, at);
		else
		{
			unsigned char h[HASH_LEN];

			Sha256(s->jws, strlen(s->jws), h);
			if (strcmp(B64(h), head) != 0)
				Problem(p, "log_seal", seal_id,
						"seal %lld is not the seal witness %s cosigned at %s: it was rewritten (its hash was %s, it is %s)",
						(long long) seal_id, witness, at, head, B64(h));
		}
	}
}

/*
 * CheckHeaders - each row of interop.message_header must hash to its digest;
 * the intact ones are what the records may refer to (CompareRecords)
 */
static void
CheckHeaders(Problems *p)
{
	intact_headers = NULL;
	if (SPI_execute("SELECT id, digest, header FROM interop.message_header ORDER BY id", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.message_header");
	intact_headers = palloc(sizeof(char *) * (SPI_processed + 1));
	nintact_headers = 0;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
		char	   *digest = SPI_getvalue(t, d, 2);
		char	   *header = SPI_getvalue(t, d, 3);

		if (strlen(digest) != 43 || strcmp(Sha256Base64Url(header, strlen(header)), digest) != 0)
			Problem(p, "message_header", id, "protected header %lld was changed: it does not hash to its digest %s",
					(long long) id, digest);
		else
			intact_headers[nintact_headers++] = digest;
	}
	qsort(intact_headers, nintact_headers, sizeof(char *), CompareDigests);
}

/*
 * VerifyLog - recompute every seal; one row per problem, in the order of
 * the seals and then of the records.  No rows: all verifies.
 */
static void
VerifyLog(FunctionCallInfo fcinfo)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Problems	p;
	SealRow    *seals;
	uint64		nseals;
	List	   *keys,
			   *kids;
	char	   *prev = NULL;
	int64		after[NUM_LOGS] = {0};
	bool		typed_seen = false;

	InitMaterializedSRF(fcinfo, 0);
	p.store = rsinfo->setResult;
	p.desc = rsinfo->setDesc;
	p.n = 0;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	keys = NodeKeys(&kids);
	CheckHeaders(&p);

	if (SPI_execute("SELECT id, log, kind, after_id, upto_id, record_count, root, prev, jws, sealed_at "
					"FROM interop.log_seal ORDER BY id", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.log_seal");
	nseals = SPI_processed;
	seals = palloc0(sizeof(SealRow) * (nseals + 1));
	for (uint64 i = 0; i < nseals; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;

		seals[i].id = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
		seals[i].log = SPI_getvalue(t, d, 2);
		seals[i].kind = SPI_getvalue(t, d, 3);
		seals[i].after = DatumGetInt64(SPI_getbinval(t, d, 4, &isnull));
		seals[i].upto = DatumGetInt64(SPI_getbinval(t, d, 5, &isnull));
		seals[i].count = DatumGetInt64(SPI_getbinval(t, d, 6, &isnull));
		seals[i].root = SPI_getvalue(t, d, 7);
		seals[i].prev = SPI_getvalue(t, d, 8);
		seals[i].jws = SPI_getvalue(t, d, 9);
		seals[i].sealed_at = DatumGetTimestampTz(SPI_getbinval(t, d, 10, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);

	/* each seal's records are dated after the seal of the same log before it */
	for (uint64 i = 0; i < nseals; i++)
		for (int64 j = (int64) i - 1; j >= 0; j--)
			if (strcmp(seals[j].kind, "seal") == 0 && strcmp(seals[j].log, seals[i].log) == 0)
			{
				seals[i].not_before = seals[j].sealed_at - RECORD_DATE_SLACK;
				break;
			}

	/* records of seals that a later prune entry covers are gone on purpose */
	for (uint64 i = 0; i < nseals; i++)
		if (strcmp(seals[i].kind, "prune") == 0)
			for (uint64 j = 0; j < i; j++)
				if (strcmp(seals[j].log, seals[i].log) == 0 && seals[j].upto <= seals[i].upto)
					seals[j].pruned = true;

	for (uint64 i = 0; i < nseals; i++)
	{
		SealRow    *s = &seals[i];
		int			l = -1;
		unsigned char h[HASH_LEN];

		for (int k = 0; k < NUM_LOGS; k++)
			if (strcmp(sealed_logs[k].name, s->log) == 0)
				l = k;
		if (l < 0)
			Problem(&p, "log_seal", s->id, "seal %lld names an unknown log \"%s\"", (long long) s->id, s->log);
		else
		{
			/* a prune entry starts where the pruning started, not after the last seal */
			int64		expected = strcmp(s->kind, "prune") == 0 ? s->after : after[l];

			if (strcmp(s->kind, "prune") == 0)
			{
				int64		pruned_from = 0;

				for (uint64 j = 0; j < i; j++)
					if (strcmp(seals[j].log, s->log) == 0 && strcmp(seals[j].kind, "prune") == 0)
						pruned_from = seals[j].upto;
				expected = pruned_from;
			}
			VerifySeal(&p, s, prev, expected, keys, kids, &typed_seen);
			if (strcmp(s->kind, "seal") == 0)
				after[l] = s->upto;
		}
		Sha256(s->jws, strlen(s->jws), h);
		prev = B64(h);
	}
	for (int l = 0; l < NUM_LOGS; l++)
		CheckUncovered(&p, &sealed_logs[l], seals, nseals);
	CheckTimestamps(&p, seals, nseals);
	CheckCosignatures(&p, seals, nseals);
	SPI_finish();
}

PG_FUNCTION_INFO_V1(interop_verify_log);
/* interop_verify_log - VerifyLog(); the list of intact headers lives only as long */
Datum
interop_verify_log(PG_FUNCTION_ARGS)
{
	PG_TRY();
	{
		VerifyLog(fcinfo);
	}
	PG_FINALLY();
	{
		intact_headers = NULL;
	}
	PG_END_TRY();
	return (Datum) 0;
}

/* ---- append-only, and pruning ---- */

PG_FUNCTION_INFO_V1(interop_log_append_only);
/*
 * interop_log_append_only - statement trigger on the logs: UPDATE, DELETE
 * and TRUNCATE are refused, except prune_log()'s own DELETE.
 */
Datum
interop_log_append_only(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("interop_log_append_only() must be called as a trigger")));
	if (pruning && TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		return PointerGetDatum(NULL);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("interop.%s is append-only", RelationGetRelationName(trigdata->tg_relation)),
			 errdetail("Its records are evidence: they are never updated or deleted, and their seals would show it."),
			 errhint("Old records are removed by whole sealed batches with interop.prune_log(before).")));
	PG_RETURN_NULL();
}

/*
 * ArchiveRecords - copy the message_log records in (from, upto] into
 * interop.log_archive before prune_log() deletes them: each with the bytes
 * its seal hashed, so that interop.evidence() can still be given for it
 */
static void
ArchiveRecords(int64 from, int64 upto)
{
	Datum		values[3];
	Oid			types[3] = {INT8OID, INT8OID, BYTEAOID};
	SPITupleTable *seals;
	uint64		nseals;
	uint64		k = 0;
	RecordCursor rc;
	StringInfoData pre;
	int64		id;
	unsigned char leaf[HASH_LEN];

	values[0] = Int64GetDatum(from);
	values[1] = Int64GetDatum(upto);
	if (SPI_execute_with_args("SELECT id, upto_id FROM interop.log_seal WHERE log = 'message_log' AND kind = 'seal' "
							  "AND upto_id > $1 AND after_id < $2 ORDER BY after_id",
							  2, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.log_seal");
	seals = SPI_tuptable;
	nseals = SPI_processed;
	initStringInfo(&pre);
	leaf_preimage = &pre;
	PG_TRY();
	{
		OpenRecords(&rc, &sealed_logs[0], from, upto);
		while (NextRecord(&rc, &id, leaf))
		{
			bool		isnull;
			bytea	   *b;

			while (k + 1 < nseals &&
				   DatumGetInt64(SPI_getbinval(seals->vals[k], seals->tupdesc, 2, &isnull)) < id)
				k++;
			b = palloc(VARHDRSZ + pre.len);
			SET_VARSIZE(b, VARHDRSZ + pre.len);
			memcpy(VARDATA(b), pre.data, pre.len);
			values[0] = Int64GetDatum(id);
			values[1] = SPI_getbinval(seals->vals[k], seals->tupdesc, 1, &isnull);
			values[2] = PointerGetDatum(b);
			if (SPI_execute_with_args("INSERT INTO interop.log_archive (record_id, seal_id, bytes, at, direction, peer, "
									  "service, jti, status, request, response) "
									  "SELECT $1, $2, $3, at, direction, peer::text, service, jti, status, request, response "
									  "FROM interop.message_log WHERE id = $1",
									  3, types, values, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not write interop.log_archive");
			pfree(b);
			resetStringInfo(&pre);
		}
		CloseRecords(&rc);
	}
	PG_FINALLY();
	{
		leaf_preimage = NULL;
	}
	PG_END_TRY();
	SPI_freetuptable(seals);
}

/* PruneOne - delete the records of the whole seals of a log whose records are all older than before */
static int64
PruneOne(const SealedLog *log, TimestampTz before)
{
	Datum		values[2];
	Oid			types[2] = {TEXTOID, INT8OID};
	bool		isnull;
	int64		from,
				n;
	volatile int64 upto = -1;

	values[0] = CStringGetTextDatum(log->name);
	from = QueryInt64("SELECT max(upto_id) FROM interop.log_seal WHERE log = $1 AND kind = 'prune'",
					  1, types, values, &isnull);
	if (isnull)
		from = 0;
	values[1] = Int64GetDatum(from);
	if (SPI_execute_with_args("SELECT upto_id, last_at FROM interop.log_seal "
							  "WHERE log = $1 AND kind = 'seal' AND upto_id > $2 ORDER BY id",
							  2, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.log_seal");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum		at = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);

		if (!isnull && DatumGetTimestampTz(at) >= before)
			break;
		upto = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}
	if (upto < 0)
		return 0;

	values[0] = Int64GetDatum(from);
	values[1] = Int64GetDatum(upto);
	types[0] = INT8OID;
	if (log == &sealed_logs[0])
		ArchiveRecords(from, upto);
	pruning = true;
	PG_TRY();
	{
		if (SPI_execute_with_args(psprintf("DELETE FROM interop.%s WHERE id > $1 AND id <= $2", log->name),
								  2, types, values, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not prune interop.%s", log->name);
	}
	PG_FINALLY();
	{
		pruning = false;
	}
	PG_END_TRY();
	n = SPI_processed;
	InsertSeal(log->name, "prune", from, upto, n, NULL, NULL, LastSealHash(), 0,
			   psprintf(",\"before\":%s", Quote(timestamptz_to_str(before))));
	return n;
}

PG_FUNCTION_INFO_V1(interop_prune_log);
/*
 * interop_prune_log - seal what is new, then delete the records of every
 * whole seal whose records are all older than before; returns how many.
 */
Datum
interop_prune_log(PG_FUNCTION_ARGS)
{
	TimestampTz before;
	int64		n = 0;

	RefuseOnStandby("interop.prune_log()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("before must not be null")));
	before = PG_GETARG_TIMESTAMPTZ(0);
	if (before > GetCurrentTransactionStartTimestamp() - (TimestampTz) interop_min_log_retention * USECS_PER_MINUTE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot prune the logs up to %s", timestamptz_to_str(before)),
				 errdetail("interop.min_log_retention keeps every record for %d minutes: the cutoff can be %s at the latest.",
						   interop_min_log_retention,
						   timestamptz_to_str(GetCurrentTransactionStartTimestamp() -
											  (TimestampTz) interop_min_log_retention * USECS_PER_MINUTE)),
				 errhint("Pass an earlier cutoff; only a superuser can lower interop.min_log_retention.")));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	(void) SealLogs();
	for (int i = 0; i < NUM_LOGS; i++)
		n += PruneOne(&sealed_logs[i], before);
	SPI_finish();
	PG_RETURN_INT64(n);
}

/* ---- evidence ---- */

/* AppendMerklePath - the inclusion path of leaf index among n: JSON array */
static void
AppendMerklePath(StringInfo buf, const unsigned char *leaves, int64 n, int64 index)
{
	unsigned char *level = palloc(Max(n, 1) * HASH_LEN);
	unsigned char node[1 + 2 * HASH_LEN];
	bool		first = true;

	for (int64 i = 0; i < n; i++)
		memcpy(level + i * HASH_LEN, leaves + i * LEAF_LEN + 8, HASH_LEN);
	node[0] = 1;
	appendStringInfoChar(buf, '[');
	while (n > 1)
	{
		int64		sibling = index ^ 1;
		int64		m = 0;

		/* the last node of an odd level has no sibling: it goes up as it is */
		if (sibling < n)
		{
			appendStringInfo(buf, "%s{\"side\":\"%s\",\"hash\":\"%s\"}", first ? "" : ",",
							 (index & 1) ? "left" : "right", B64(level + sibling * HASH_LEN));
			first = false;
		}
		for (int64 i = 0; i < n; i += 2)
		{
			if (i + 1 < n)
			{
				memcpy(node + 1, level + i * HASH_LEN, 2 * HASH_LEN);
				Sha256(node, sizeof(node), level + m * HASH_LEN);
			}
			else
				memmove(level + m * HASH_LEN, level + i * HASH_LEN, HASH_LEN);
			m++;
		}
		index >>= 1;
		n = m;
	}
	appendStringInfoChar(buf, ']');
	pfree(level);
}

/* JsonText - a JSON string, or null */
static void
JsonText(StringInfo buf, const char *s)
{
	if (s == NULL)
		appendStringInfoString(buf, "null");
	else
		escape_json(buf, s);
}

/* RecordPreimage - the bytes the leaf hash of message_log record id is over, and that hash */
static void
RecordPreimage(int64 id, StringInfo preimage, unsigned char *leaf)
{
	RecordCursor rc;
	int64		rid;

	leaf_preimage = preimage;
	PG_TRY();
	{
		OpenRecords(&rc, &sealed_logs[0], id - 1, id);
		if (!NextRecord(&rc, &rid, leaf))
			elog(ERROR, "record %lld vanished", (long long) id);
		CloseRecords(&rc);
	}
	PG_FINALLY();
	{
		leaf_preimage = NULL;
	}
	PG_END_TRY();
}

PG_FUNCTION_INFO_V1(interop_evidence);
/*
 * interop_evidence - one self-contained JSON document for the exchange of
 * message_log record id: its request and answer (JWS, with their chains),
 * the bytes its leaf hash is over, the seal that covers it with the Merkle
 * path to its root, the chain of seals from it to the first seal with a
 * timestamp token and to the first seal each witness cosigned, that token,
 * those cosignatures, and the public key the seals are signed with.  Each
 * part verifies with standard tools (docs/security.md).
 */
Datum
interop_evidence(PG_FUNCTION_ARGS)
{
	int64		id = PG_GETARG_INT64(0);
	Datum		arg = Int64GetDatum(id);
	Oid			argtype = INT8OID;
	StringInfoData buf;
	StringInfoData preimage;
	SPITupleTable *tt;
	int64		seal_id,
				after,
				count,
				index = -1;
	bytea	   *lv;
	bytea	   *archived;
	char	   *seal_jws;
	bool		isnull;
	unsigned char leaf[HASH_LEN];
	char	   *kid_pem = NULL;
	SPITupleTable *cosignatures;
	uint64		ncosignatures;
	int64		cosigned_upto = 0;
	MemoryContext caller = CurrentMemoryContext;
	char	   *doc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT request, response, direction, peer::text, service, jti, "
							  "pg_catalog.to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), status, NULL::bytea "
							  "FROM interop.message_log WHERE id = $1 "
							  "UNION ALL SELECT request, response, direction, peer, service, jti, "
							  "pg_catalog.to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), status, bytes "
							  "FROM interop.log_archive WHERE record_id = $1 LIMIT 1",
							  1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.message_log");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("there is no record %lld in interop.message_log", (long long) id),
				 errhint("Pass the id of a record of interop.message_log or of interop.log_archive, where interop.prune_log() keeps what it removes.")));
	tt = SPI_tuptable;
	{
		Datum		d = SPI_getbinval(tt->vals[0], tt->tupdesc, 9, &isnull);

		archived = isnull ? NULL : DatumGetByteaPCopy(d);
	}
	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"typ\":\"interop-evidence\",\"version\":1,\"node\":");
	JsonText(&buf, GetNodeState()->member_id);
	appendStringInfo(&buf, ",\"record\":{\"id\":" INT64_FORMAT ",\"direction\":", id);
	JsonText(&buf, SPI_getvalue(tt->vals[0], tt->tupdesc, 3));
	appendStringInfoString(&buf, ",\"peer\":");
	JsonText(&buf, SPI_getvalue(tt->vals[0], tt->tupdesc, 4));
	appendStringInfoString(&buf, ",\"service\":");
	JsonText(&buf, SPI_getvalue(tt->vals[0], tt->tupdesc, 5));
	appendStringInfoString(&buf, ",\"jti\":");
	JsonText(&buf, SPI_getvalue(tt->vals[0], tt->tupdesc, 6));
	appendStringInfoString(&buf, ",\"at\":");
	JsonText(&buf, SPI_getvalue(tt->vals[0], tt->tupdesc, 7));
	appendStringInfoString(&buf, ",\"status\":");
	appendStringInfoString(&buf, SPI_getvalue(tt->vals[0], tt->tupdesc, 8) ? SPI_getvalue(tt->vals[0], tt->tupdesc, 8) : "null");
	appendStringInfoString(&buf, "},\"request\":");
	JsonText(&buf, LoggedJws(SPI_getvalue(tt->vals[0], tt->tupdesc, 1)));
	appendStringInfoString(&buf, ",\"response\":");
	JsonText(&buf, LoggedJws(SPI_getvalue(tt->vals[0], tt->tupdesc, 2)));

	/* the seal that covers it */
	if (SPI_execute_with_args("SELECT id, after_id, record_count, leaves, jws FROM interop.log_seal "
							  "WHERE log = 'message_log' AND kind = 'seal' AND after_id < $1 AND upto_id >= $1",
							  1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.log_seal");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("record %lld of interop.message_log is not sealed yet", (long long) id),
				 errhint("The sync worker seals every interop.seal_interval; interop.seal_log() seals now.")));
	tt = SPI_tuptable;
	seal_id = DatumGetInt64(SPI_getbinval(tt->vals[0], tt->tupdesc, 1, &isnull));
	after = DatumGetInt64(SPI_getbinval(tt->vals[0], tt->tupdesc, 2, &isnull));
	count = DatumGetInt64(SPI_getbinval(tt->vals[0], tt->tupdesc, 3, &isnull));
	lv = DatumGetByteaPCopy(SPI_getbinval(tt->vals[0], tt->tupdesc, 4, &isnull));
	seal_jws = SPI_getvalue(tt->vals[0], tt->tupdesc, 5);
	if (isnull || VARSIZE_ANY_EXHDR(lv) != count * LEAF_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("seal %lld has lost its record hashes", (long long) seal_id),
				 errhint("Run interop.verify_log().")));
	for (int64 i = 0; i < count; i++)
		if (GetInt64((unsigned char *) VARDATA_ANY(lv) + i * LEAF_LEN) == id)
			index = i;

	/* the record's bytes, hashed as the sealer did; they must still match */
	initStringInfo(&preimage);
	if (archived == NULL)
		RecordPreimage(id, &preimage, leaf);
	else
	{
		/* archived by prune_log(): its bytes, hashed again here */
		unsigned char *buf = palloc(1 + VARSIZE_ANY_EXHDR(archived));

		buf[0] = 0;
		memcpy(buf + 1, VARDATA_ANY(archived), VARSIZE_ANY_EXHDR(archived));
		Sha256(buf, 1 + VARSIZE_ANY_EXHDR(archived), leaf);
		appendBinaryStringInfo(&preimage, VARDATA_ANY(archived), VARSIZE_ANY_EXHDR(archived));
	}
	if (index < 0 || memcmp(leaf, (unsigned char *) VARDATA_ANY(lv) + index * LEAF_LEN + 8, HASH_LEN) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("record %lld of interop.message_log does not match seal %lld", (long long) id, (long long) seal_id),
				 errdetail("The record was %s after it was sealed: there is no evidence of it to give.",
						   index < 0 ? "inserted into the seal's range" : "changed"),
				 errhint("Run interop.verify_log().")));
	appendStringInfo(&buf, ",\"leaf\":{\"columns\":");
	JsonText(&buf, sealed_logs[0].columns);
	appendStringInfo(&buf, ",\"bytes\":\"%s\",\"hash\":\"%s\"}",
					 Base64UrlEncode((unsigned char *) preimage.data, preimage.len), B64(leaf));
	appendStringInfo(&buf, ",\"seal\":{\"id\":" INT64_FORMAT ",\"after\":" INT64_FORMAT ",\"index\":" INT64_FORMAT
					 ",\"count\":" INT64_FORMAT ",\"path\":",
					 seal_id, after, index, count);
	AppendMerklePath(&buf, (unsigned char *) VARDATA_ANY(lv), count, index);
	appendStringInfoString(&buf, ",\"jws\":");
	JsonText(&buf, seal_jws);
	appendStringInfoChar(&buf, '}');

	/*
	 * each witness's first cosignature of a head at or after the seal: it
	 * shows the seal was in the chain the witness saw
	 */
	arg = Int64GetDatum(seal_id);
	if (SPI_execute_with_args("SELECT DISTINCT ON (c.witness) c.witness::text, c.seal_id, c.jws "
							  "FROM interop.cosignature c WHERE c.seal_id >= $1 ORDER BY c.witness, c.seal_id",
							  1, &argtype, &arg, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.cosignature");
	cosignatures = SPI_tuptable;
	ncosignatures = SPI_processed;
	for (uint64 i = 0; i < ncosignatures; i++)
		cosigned_upto = Max(cosigned_upto,
							DatumGetInt64(SPI_getbinval(cosignatures->vals[i], cosignatures->tupdesc, 2, &isnull)));

	/*
	 * the seals from it to the first one with a timestamp (or to the newest)
	 * and on to the last one cosigned above, each chained to the one before
	 */
	{
		Oid			types[2] = {INT8OID, INT8OID};
		Datum		args[2] = {Int64GetDatum(seal_id), Int64GetDatum(cosigned_upto)};

		if (SPI_execute_with_args("SELECT s.id, s.jws, t.token IS NOT NULL, encode(t.token, 'base64') "
								  "FROM interop.log_seal s LEFT JOIN interop.seal_timestamp t ON t.seal_id = s.id "
								  "WHERE s.id >= $1 AND s.id <= GREATEST($2, coalesce((SELECT min(seal_id) "
								  "FROM interop.seal_timestamp WHERE seal_id >= $1), (SELECT max(id) FROM interop.log_seal))) "
								  "ORDER BY s.id",
								  2, types, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read interop.log_seal");
	}
	tt = SPI_tuptable;
	appendStringInfoString(&buf, ",\"chain\":[");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		appendStringInfoString(&buf, i ? "," : "");
		JsonText(&buf, SPI_getvalue(tt->vals[i], tt->tupdesc, 2));
	}
	appendStringInfoString(&buf, "],\"timestamp\":");
	{
		uint64		t = 0;

		while (t < SPI_processed && strcmp(SPI_getvalue(tt->vals[t], tt->tupdesc, 3), "t") != 0)
			t++;
		if (t < SPI_processed)
		{
			char	   *b64 = SPI_getvalue(tt->vals[t], tt->tupdesc, 4);
			char	   *out = palloc(strlen(b64) + 1);
			char	   *o = out;

			/* encode() breaks lines; the document carries one string */
			for (char *c = b64; *c; c++)
				if (*c != '\n')
					*o++ = *c;
			*o = '\0';
			appendStringInfo(&buf, "{\"seal_id\":%s,\"index\":" UINT64_FORMAT ",\"token\":\"%s\"}",
							 SPI_getvalue(tt->vals[t], tt->tupdesc, 1), t, out);
		}
		else
			appendStringInfoString(&buf, "null");
	}
	appendStringInfoString(&buf, ",\"cosignatures\":[");
	for (uint64 i = 0; i < ncosignatures; i++)
	{
		int64		cosigned = DatumGetInt64(SPI_getbinval(cosignatures->vals[i], cosignatures->tupdesc, 2, &isnull));
		uint64		k = 0;

		while (k < SPI_processed &&
			   DatumGetInt64(SPI_getbinval(tt->vals[k], tt->tupdesc, 1, &isnull)) != cosigned)
			k++;
		if (k == SPI_processed)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("seal %lld cosigned by witness \"%s\" is missing", (long long) cosigned,
							SPI_getvalue(cosignatures->vals[i], cosignatures->tupdesc, 1)),
					 errhint("Run interop.verify_log().")));
		appendStringInfoString(&buf, i ? ",{\"witness\":" : "{\"witness\":");
		JsonText(&buf, SPI_getvalue(cosignatures->vals[i], cosignatures->tupdesc, 1));
		appendStringInfo(&buf, ",\"seal_id\":" INT64_FORMAT ",\"index\":" UINT64_FORMAT ",\"jws\":", cosigned, k);
		JsonText(&buf, SPI_getvalue(cosignatures->vals[i], cosignatures->tupdesc, 3));
		appendStringInfoChar(&buf, '}');
	}
	appendStringInfoChar(&buf, ']');

	/* the key the seal names, among those the node has had */
	{
		List	   *kids;
		List	   *keys = NodeKeys(&kids);
		char	   *dot1 = strchr(seal_jws, '.');
		char	   *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
		size_t		len = 0;
		char	   *raw = dot2 ? (char *) Base64UrlDecode(dot1 + 1, dot2 - dot1 - 1, &len) : NULL;
		Jsonb	   *payload = raw ? JsonOrNull(raw, len) : NULL;
		char	   *want = payload ? PayloadField(payload, "kid") : NULL;
		ListCell   *lk,
				   *lc;

		forboth(lk, keys, lc, kids)
		{
			if (want != NULL && strcmp(lfirst(lc), want) == 0)
			{
				BIO		   *bio = BIO_new(BIO_s_mem());
				char	   *data;
				long		n;

				if (bio == NULL || !PEM_write_bio_PUBKEY(bio, lfirst(lk)))
					OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not encode a public key", NULL);
				n = BIO_get_mem_data(bio, &data);
				kid_pem = pnstrdup(data, n);
				BIO_free(bio);
			}
		}
	}
	appendStringInfoString(&buf, ",\"seal_key\":");
	JsonText(&buf, kid_pem);
	appendStringInfoChar(&buf, '}');
	/* the document is in SPI's memory, which SPI_finish() frees */
	doc = MemoryContextStrdup(caller, buf.data);
	SPI_finish();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(doc)));
}
