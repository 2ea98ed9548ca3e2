/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Counters of exchanges in shared memory: the gateway's requests by
 *	  service and status, and this node's calls to peers by peer and
 *	  status, each with a latency histogram.  Read by the
 *	  interop.stat_gateway and interop.stat_peer views and by GET /metrics.
 *
 * One fixed array of slots, one per (kind, name, status), under a spinlock;
 * an update is a short search and a few additions.  When every slot is
 * taken, further combinations are counted in "dropped".  The counters start
 * at zero when the server starts, as Prometheus counters may.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include <openssl/ssl.h>

#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"

#define STAT_SLOTS 512
#define STAT_NAME 128
#define STAT_ERROR 200

/* upper bounds of the latency buckets, in seconds (the last is +Inf) */
static const double bucket_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define STAT_BUCKETS (lengthof(bucket_le) + 1)

typedef struct StatSlot
{
	char		kind;			/* 0: free, 'g': gateway, 'p': peer */
	int			status;
	char		name[STAT_NAME];
	uint64		count;
	double		total_ms;
	uint64		buckets[STAT_BUCKETS];	/* not cumulative */
	char		last_error[STAT_ERROR];
	TimestampTz last_error_at;
} StatSlot;

typedef struct InteropStats
{
	slock_t		mutex;
	uint64		dropped;
	TimestampTz log_written_at; /* the last log write that succeeded */
	TimestampTz log_failed_at;	/* ... and that failed */
	char		log_failure[STAT_ERROR];
	uint64		refused_handshakes[256];	/* by TLS alert description */
	uint64		group_flushes;	/* the gateway's group commits */
	uint64		group_answers;	/* ... and the answers they sent */
	TimestampTz timestamp_gap_since;	/* the oldest seal without a timestamp (0: none) */
	char		timestamp_failure[STAT_ERROR];	/* why the last request to the TSA failed */
	StatSlot	slots[STAT_SLOTS];
} InteropStats;

static InteropStats *stats = NULL;

Size
InteropStatsShmemSize(void)
{
	return sizeof(InteropStats);
}

void
InteropStatsShmemInit(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats = ShmemInitStruct("interop stats", sizeof(InteropStats), &found);
	if (!found)
	{
		memset(stats, 0, sizeof(InteropStats));
		SpinLockInit(&stats->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * NoteLogWrite - the outcome of a write to interop.message_log, for
 * readiness (GET /v1/health).  Without shared memory a no-op.
 */
void
NoteLogWrite(bool ok, const char *why)
{
	if (stats == NULL)
		return;
	SpinLockAcquire(&stats->mutex);
	if (ok)
		stats->log_written_at = GetCurrentTimestamp();
	else
	{
		stats->log_failed_at = GetCurrentTimestamp();
		strlcpy(stats->log_failure, why ? why : "", sizeof(stats->log_failure));
	}
	SpinLockRelease(&stats->mutex);
}

/*
 * NoteTimestampGap - the oldest seal no timestamp covers (0: none), and why
 * the last request to the TSA failed (NULL: it did not), from the sync
 * worker for the gateway (src/tsa.c)
 */
void
NoteTimestampGap(TimestampTz since, const char *why)
{
	if (stats == NULL)
		return;
	SpinLockAcquire(&stats->mutex);
	stats->timestamp_gap_since = since;
	strlcpy(stats->timestamp_failure, why ? why : "", sizeof(stats->timestamp_failure));
	SpinLockRelease(&stats->mutex);
}

/* TimestampGapSince - what NoteTimestampGap noted last; why gets its failure */
TimestampTz
TimestampGapSince(char *why, size_t whylen)
{
	TimestampTz since;

	why[0] = '\0';
	if (stats == NULL)
		return 0;
	SpinLockAcquire(&stats->mutex);
	since = stats->timestamp_gap_since;
	strlcpy(why, stats->timestamp_failure, whylen);
	SpinLockRelease(&stats->mutex);
	return since;
}

/* CountRefusedHandshake - the gateway refused a TLS handshake with alert */
void
CountRefusedHandshake(int alert)
{
	if (stats == NULL)
		return;
	SpinLockAcquire(&stats->mutex);
	stats->refused_handshakes[alert & 0xff]++;
	SpinLockRelease(&stats->mutex);
}

/* CountGroupCommit - the gateway flushed once for n held answers */
void
CountGroupCommit(int n)
{
	if (stats == NULL)
		return;
	SpinLockAcquire(&stats->mutex);
	stats->group_flushes++;
	stats->group_answers += n;
	SpinLockRelease(&stats->mutex);
}

/*
 * LogWriteFailing - did the last write to the log fail, within the last
 * within_s seconds?  Then why holds the error.
 */
bool
LogWriteFailing(int within_s, char *why, size_t whylen)
{
	bool		failing;

	if (stats == NULL)
		return false;
	SpinLockAcquire(&stats->mutex);
	failing = stats->log_failed_at > stats->log_written_at &&
		GetCurrentTimestamp() - stats->log_failed_at < (int64) within_s * USECS_PER_SEC;
	if (failing)
		strlcpy(why, stats->log_failure, whylen);
	SpinLockRelease(&stats->mutex);
	return failing;
}

/*
 * CountExchange - one exchange: kind 'g' (served, name = service) or 'p'
 * (made, name = peer), its HTTP status (0: no answer), how long it took,
 * and its error, if any.  Without shared memory (not preloaded) a no-op.
 */
void
CountExchange(char kind, const char *name, int status, double ms, const char *error)
{
	StatSlot   *slot = NULL;
	int			b = 0;

	if (stats == NULL)
		return;
	if (name == NULL)
		name = "";
	while (b < (int) lengthof(bucket_le) && ms / 1000.0 > bucket_le[b])
		b++;
	SpinLockAcquire(&stats->mutex);
	for (int i = 0; i < STAT_SLOTS; i++)
	{
		StatSlot   *s = &stats->slots[i];

		if (s->kind == 0)
		{
			s->kind = kind;
			s->status = status;
			strlcpy(s->name, name, STAT_NAME);
			slot = s;
			break;
		}
		if (s->kind == kind && s->status == status && strncmp(s->name, name, STAT_NAME - 1) == 0)
		{
			slot = s;
			break;
		}
	}
	if (slot == NULL)
		stats->dropped++;
	else
	{
		slot->count++;
		slot->total_ms += ms;
		slot->buckets[b]++;
		if (error != NULL)
		{
			strlcpy(slot->last_error, error, STAT_ERROR);
			slot->last_error_at = GetCurrentTimestamp();
		}
	}
	SpinLockRelease(&stats->mutex);
}

/* CopyStats - a consistent copy of the slots in use; returns how many */
static int
CopyStats(StatSlot *copy, uint64 *dropped)
{
	int			n = 0;

	if (stats == NULL)
		return 0;
	SpinLockAcquire(&stats->mutex);
	for (int i = 0; i < STAT_SLOTS && stats->slots[i].kind != 0; i++)
		copy[n++] = stats->slots[i];
	*dropped = stats->dropped;
	SpinLockRelease(&stats->mutex);
	return n;
}

PG_FUNCTION_INFO_V1(interop_stat_counters);
/* interop_stat_counters - the slots of one kind ('gateway' or 'peer') */
Datum
interop_stat_counters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char		k = strcmp(kind, "gateway") == 0 ? 'g' : strcmp(kind, "peer") == 0 ? 'p' : 0;
	StatSlot   *copy = palloc(sizeof(StatSlot) * STAT_SLOTS);
	uint64		dropped;
	int			n;

	if (k == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown counter kind \"%s\"", kind),
				 errhint("Use \"gateway\" or \"peer\".")));
	InitMaterializedSRF(fcinfo, 0);
	n = CopyStats(copy, &dropped);
	for (int i = 0; i < n; i++)
	{
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};

		if (copy[i].kind != k)
			continue;
		values[0] = CStringGetTextDatum(copy[i].name);
		values[1] = Int32GetDatum(copy[i].status);
		values[2] = Int64GetDatum((int64) copy[i].count);
		values[3] = Float8GetDatum(copy[i].total_ms);
		nulls[4] = copy[i].last_error[0] == '\0';
		values[4] = nulls[4] ? (Datum) 0 : CStringGetTextDatum(copy[i].last_error);
		nulls[5] = copy[i].last_error_at == 0;
		values[5] = TimestampTzGetDatum(copy[i].last_error_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* AppendLabel - a Prometheus label value, escaped */
static void
AppendLabel(StringInfo buf, const char *s)
{
	for (; *s; s++)
	{
		if (*s == '\\' || *s == '"')
			appendStringInfoChar(buf, '\\');
		if (*s == '\n')
		{
			appendStringInfoString(buf, "\\n");
			continue;
		}
		appendStringInfoChar(buf, *s);
	}
}

/*
 * MetricsText - the counters in Prometheus text format, with extra lines
 * (the async queue, read by the caller from the database) appended.
 */
char *
MetricsText(const char *extra)
{
	StatSlot   *copy = palloc(sizeof(StatSlot) * STAT_SLOTS);
	uint64		dropped;
	int			n = CopyStats(copy, &dropped);
	StringInfoData buf;
	uint64		hist[STAT_BUCKETS] = {0};
	uint64		count = 0;
	double		sum = 0;

	initStringInfo(&buf);
	appendStringInfoString(&buf,
						   "# HELP interop_gateway_requests_total Requests answered by the gateway, by service (or endpoint) and HTTP status.\n"
						   "# TYPE interop_gateway_requests_total counter\n");
	for (int i = 0; i < n; i++)
		if (copy[i].kind == 'g')
		{
			appendStringInfoString(&buf, "interop_gateway_requests_total{service=\"");
			AppendLabel(&buf, copy[i].name);
			appendStringInfo(&buf, "\",status=\"%d\"} " UINT64_FORMAT "\n", copy[i].status, copy[i].count);
			for (int b = 0; b < (int) STAT_BUCKETS; b++)
				hist[b] += copy[i].buckets[b];
			count += copy[i].count;
			sum += copy[i].total_ms / 1000.0;
		}
	appendStringInfoString(&buf,
						   "# HELP interop_gateway_request_duration_seconds Time from a request's arrival to its answer.\n"
						   "# TYPE interop_gateway_request_duration_seconds histogram\n");
	{
		uint64		cum = 0;

		for (int b = 0; b < (int) STAT_BUCKETS; b++)
		{
			cum += hist[b];
			if (b < (int) lengthof(bucket_le))
				appendStringInfo(&buf, "interop_gateway_request_duration_seconds_bucket{le=\"%g\"} " UINT64_FORMAT "\n",
								 bucket_le[b], cum);
			else
				appendStringInfo(&buf, "interop_gateway_request_duration_seconds_bucket{le=\"+Inf\"} " UINT64_FORMAT "\n", cum);
		}
		appendStringInfo(&buf, "interop_gateway_request_duration_seconds_sum %.6f\n", sum);
		appendStringInfo(&buf, "interop_gateway_request_duration_seconds_count " UINT64_FORMAT "\n", count);
	}
	appendStringInfoString(&buf,
						   "# HELP interop_peer_calls_total Calls this node made to peers, by peer and HTTP status (0: no answer).\n"
						   "# TYPE interop_peer_calls_total counter\n");
	for (int i = 0; i < n; i++)
		if (copy[i].kind == 'p')
		{
			appendStringInfoString(&buf, "interop_peer_calls_total{peer=\"");
			AppendLabel(&buf, copy[i].name);
			appendStringInfo(&buf, "\",status=\"%d\"} " UINT64_FORMAT "\n", copy[i].status, copy[i].count);
		}
	appendStringInfoString(&buf,
						   "# HELP interop_peer_call_seconds_total Time spent in calls to peers.\n"
						   "# TYPE interop_peer_call_seconds_total counter\n");
	for (int i = 0; i < n; i++)
		if (copy[i].kind == 'p')
		{
			appendStringInfoString(&buf, "interop_peer_call_seconds_total{peer=\"");
			AppendLabel(&buf, copy[i].name);
			appendStringInfo(&buf, "\",status=\"%d\"} %.6f\n", copy[i].status, copy[i].total_ms / 1000.0);
		}
	appendStringInfo(&buf,
					 "# HELP interop_stat_dropped_total Exchanges not counted because every counter slot was taken.\n"
					 "# TYPE interop_stat_dropped_total counter\n"
					 "interop_stat_dropped_total " UINT64_FORMAT "\n", dropped);
	appendStringInfoString(&buf,
						   "# HELP interop_tls_handshakes_refused_total TLS handshakes the gateway refused, by the alert it sent.\n"
						   "# TYPE interop_tls_handshakes_refused_total counter\n");
	if (stats != NULL)
	{
		uint64		refused[256];

		SpinLockAcquire(&stats->mutex);
		memcpy(refused, stats->refused_handshakes, sizeof(refused));
		SpinLockRelease(&stats->mutex);
		for (int a = 0; a < 256; a++)
			if (refused[a] > 0)
				appendStringInfo(&buf, "interop_tls_handshakes_refused_total{reason=\"%s\"} " UINT64_FORMAT "\n",
								 SSL_alert_desc_string_long(a), refused[a]);
	}
	if (stats != NULL)
	{
		uint64		flushes,
					answers;

		SpinLockAcquire(&stats->mutex);
		flushes = stats->group_flushes;
		answers = stats->group_answers;
		SpinLockRelease(&stats->mutex);
		appendStringInfo(&buf,
						 "# HELP interop_gateway_group_flushes_total WAL flushes of the gateway's group commit, each for every answer held meanwhile.\n"
						 "# TYPE interop_gateway_group_flushes_total counter\n"
						 "interop_gateway_group_flushes_total " UINT64_FORMAT "\n"
						 "# HELP interop_gateway_group_answers_total Answers sent after a group flush (divided by the flushes: answers per flush).\n"
						 "# TYPE interop_gateway_group_answers_total counter\n"
						 "interop_gateway_group_answers_total " UINT64_FORMAT "\n", flushes, answers);
	}
	appendStringInfo(&buf,
					 "# HELP interop_log_queue_records Records handed to the log writer and not yet taken.\n"
					 "# TYPE interop_log_queue_records gauge\n"
					 "interop_log_queue_records %d\n", LogQueueDepth());
	if (extra)
		appendStringInfoString(&buf, extra);
	return buf.data;
}
