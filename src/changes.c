/*-------------------------------------------------------------------------
 *
 * changes.c
 *	  Subscriptions: POST /v1/changes on the provider, and applying a batch
 *	  on the consumer.
 *
 * The provider's capture triggers (src/subscribe.sql) write the primary key
 * of each changed row to interop.change_log with the writing transaction's
 * id.  A change request carries a cursor, "since", which this file alone
 * reads (consumers store it and send it back):
 *
 *	  null								start: the first page of the copy
 *	  {"copy": X, "after": K}			the copy page after key K
 *	  {"from": X}						the changes of transactions >= X
 *	  {"from": X, "to": Y, "tx": T, "id": I}
 *										the next page of those < Y
 *
 * X, Y and T are transaction ids (xid8, as decimal strings).  A copy takes
 * X = the xmin of its first snapshot: every transaction below X had ended,
 * so its rows are in the copy; every later one is in the change log.  A
 * change range [X, Y) is read only with Y = the xmin of the current
 * snapshot, so every transaction in it has ended and nothing can commit
 * into it afterwards.  For each changed key the answer carries the row as
 * it is now (an upsert) or, when it is gone, a delete: the consumer ends
 * up with the source's state whatever order the transactions committed in.
 *
 * Rows are read as the service's publisher, like a query (publish.c); the
 * change log is read by the gateway itself.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "access/relation.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"

/* the published table: its name, columns and primary key */
typedef struct Tracked
{
	char	   *relname;		/* qualified, quoted */
	int			ncolumns;
	char	  **column_names;
	char	  **column_types;
	int			nkey;
	char	  **key_names;
	Oid		   *key_types;
} Tracked;

/* a parsed cursor */
typedef struct Cursor
{
	bool		start;
	bool		copy;
	char	   *x;				/* copy: X; changes: from */
	char	   *to;				/* NULL: not yet fixed */
	char	   *tx;
	char	   *id;
	Jsonb	   *after;			/* copy: the last key sent, or NULL */
} Cursor;

/* CursorField - a string field of the cursor, or NULL */
static JsonbValue *
CursorField(Jsonb *c, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(&c->root, JB_FOBJECT, &k);
}

/* CursorNumber - a decimal string field (a transaction id or a log id) */
static bool
CursorNumber(Jsonb *c, const char *key, bool required, char **out)
{
	JsonbValue *v = CursorField(c, key);
	char	   *s;

	*out = NULL;
	if (v == NULL)
		return !required;
	if (v->type != jbvString || v->val.string.len == 0 || v->val.string.len > 20)
		return false;
	s = pnstrdup(v->val.string.val, v->val.string.len);
	for (char *p = s; *p; p++)
		if (*p < '0' || *p > '9')
			return false;
	*out = s;
	return true;
}

/* ParseCursor - since as a Cursor, or false when it is not one of ours */
static bool
ParseCursor(Jsonb *since, Cursor *c)
{
	JsonbValue *after;

	memset(c, 0, sizeof(*c));
	if (since == NULL)
	{
		c->start = true;
		return true;
	}
	if (CursorField(since, "copy") != NULL)
	{
		c->copy = true;
		if (!CursorNumber(since, "copy", true, &c->x))
			return false;
		after = CursorField(since, "after");
		if (after == NULL || after->type != jbvBinary || !JsonContainerIsObject(after->val.binary.data))
			return false;
		c->after = JsonbValueToJsonb(after);
		return true;
	}
	if (!CursorNumber(since, "from", true, &c->x) ||
		!CursorNumber(since, "to", false, &c->to) ||
		!CursorNumber(since, "tx", c->to != NULL, &c->tx) ||
		!CursorNumber(since, "id", c->to != NULL, &c->id))
		return false;
	return true;
}

/* LoadTracked - columns and primary key of the source, from the catalog */
static bool
LoadTracked(const Service *svc, Tracked *t, ServiceRefusal *refusal)
{
	Relation	rel = try_relation_open(svc->source, AccessShareLock);
	TupleDesc	desc;
	Oid			pk;
	HeapTuple	itup;
	Form_pg_index index;

	if (rel == NULL)
		return Refuse(refusal, 500, "internal_error", "the source of service \"%s\" was dropped", svc->name);
	desc = RelationGetDescr(rel);
	t->relname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
											RelationGetRelationName(rel));
	t->column_names = palloc(sizeof(char *) * Max(desc->natts, 1));
	t->column_types = palloc(sizeof(char *) * Max(desc->natts, 1));
	t->ncolumns = 0;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		t->column_names[t->ncolumns] = pstrdup(NameStr(att->attname));
		t->column_types[t->ncolumns] = format_type_be(att->atttypid);
		t->ncolumns++;
	}
	pk = PrimaryKeyIndex(rel);
	if (!OidIsValid(pk))
	{
		relation_close(rel, AccessShareLock);
		return Refuse(refusal, 500, "internal_error", "the source of service \"%s\" has no primary key", svc->name);
	}
	itup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(pk));
	if (!HeapTupleIsValid(itup))
		elog(ERROR, "cache lookup failed for index %u", pk);
	index = (Form_pg_index) GETSTRUCT(itup);
	t->nkey = index->indnkeyatts;
	t->key_names = palloc(sizeof(char *) * t->nkey);
	t->key_types = palloc(sizeof(Oid) * t->nkey);
	for (int i = 0; i < t->nkey; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, index->indkey.values[i] - 1);

		t->key_names[i] = pstrdup(NameStr(att->attname));
		t->key_types[i] = att->atttypid;
	}
	ReleaseSysCache(itup);
	relation_close(rel, NoLock);
	return true;
}

/* KeyText - the text of one key value of a cursor's "after", for its type's input */
static char *
KeyText(Jsonb *after, const char *name)
{
	JsonbValue *v = CursorField(after, name);

	if (v == NULL)
		return NULL;
	switch (v->type)
	{
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		default:
			return NULL;
	}
}

/* RunAsOwner - SPI as the service's publisher, read-only; SPI_processed rows */
static void
RunAsOwner(const Service *svc, const char *sql, int nargs, Oid *types, Datum *values)
{
	RoleSwitch	save;
	int			ret;

	BecomeRole(svc->owner, &save);
	ret = SPI_execute_with_args(sql, nargs, types, values, NULL, true, 0);
	RestoreRole(&save);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read service \"%s\": %s", svc->name, SPI_result_code_string(ret));
}

/* KeyList - "t.a, t.b" */
static char *
KeyList(const Tracked *t)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < t->nkey; i++)
		appendStringInfo(&buf, "%st.%s", i ? ", " : "", quote_identifier(t->key_names[i]));
	return buf.data;
}

/*
 * KeyOfRow - the key object ({"a": ..., "b": ...}) of a row as JSON text:
 * the copy cursor's "after".  Only the page's last row needs one, so it is
 * made here rather than for every row in the query.
 */
static char *
KeyOfRow(const Tracked *t, const char *row_json)
{
	Jsonb	   *row = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(row_json)));
	JsonbParseState *state = NULL;
	JsonbValue *obj;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < t->nkey; i++)
	{
		JsonbValue	k;
		JsonbValue *v = getKeyJsonValueFromContainer(&row->root, t->key_names[i],
													 strlen(t->key_names[i]), NULL);

		if (v == NULL)
			elog(ERROR, "key column \"%s\" is missing from a row", t->key_names[i]);
		k.type = jbvString;
		k.val.string.val = t->key_names[i];
		k.val.string.len = strlen(t->key_names[i]);
		pushJsonbValue(&state, WJB_KEY, &k);
		pushJsonbValue(&state, WJB_VALUE, v);
	}
	obj = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbToCString(NULL, &JsonbValueToJsonb(obj)->root, -1);
}

/*
 * CopyPage - up to max_rows rows after the cursor's key, in key order.
 * Appends them to upserts; returns the key of the last one when there are
 * more, else NULL.
 */
static char *
CopyPage(const Service *svc, const Tracked *t, Jsonb *after, StringInfo upserts, int *nrows,
		 ServiceRefusal *refusal, bool *bad)
{
	StringInfoData sql;
	Oid		   *types = palloc(sizeof(Oid) * t->nkey);
	Datum	   *values = palloc(sizeof(Datum) * t->nkey);
	uint64		n;
	char	   *last = NULL;

	*bad = false;
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT pg_catalog.row_to_json(t)::text FROM %s AS t", t->relname);
	if (after != NULL)
	{
		appendStringInfo(&sql, " WHERE (%s) > (", KeyList(t));
		for (int i = 0; i < t->nkey; i++)
		{
			char	   *v = KeyText(after, t->key_names[i]);

			if (v == NULL)
			{
				*bad = true;
				return NULL;
			}
			types[i] = TEXTOID;
			values[i] = CStringGetTextDatum(v);
			appendStringInfo(&sql, "%s$%d::%s", i ? ", " : "", i + 1, format_type_be_qualified(t->key_types[i]));
		}
		appendStringInfoChar(&sql, ')');
	}
	appendStringInfo(&sql, " ORDER BY %s LIMIT %d", KeyList(t), svc->max_rows + 1);
	RunAsOwner(svc, sql.data, after ? t->nkey : 0, types, values);

	n = Min(SPI_processed, (uint64) svc->max_rows);
	for (uint64 r = 0; r < n; r++)
	{
		if (upserts->len > 0)
			appendStringInfoString(upserts, ", ");
		appendStringInfoString(upserts, SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1));
	}
	*nrows += (int) n;
	if (SPI_processed > (uint64) svc->max_rows)
		last = KeyOfRow(t, SPI_getvalue(SPI_tuptable->vals[n - 1], SPI_tuptable->tupdesc, 1));
	return last;
}

/*
 * ChangePage - the keys changed by transactions in [from, to) after (tx,
 * id), up to max_rows of them, and each key's row as it is now (an upsert)
 * or its absence (a delete).  Returns true when the range has more.
 */
static bool
ChangePage(const Service *svc, const Tracked *t, const Cursor *c, const char *to,
		   StringInfo upserts, StringInfo deletes, int *nrows, char **last_tx, char **last_id)
{
	Oid			types[5] = {OIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[5];
	StringInfoData keys;
	StringInfoData sql;
	uint64		nchanges;
	Oid			ktype = TEXTOID;
	Datum		kvalue;

	values[0] = ObjectIdGetDatum(svc->source);
	values[1] = CStringGetTextDatum(c->x);
	values[2] = CStringGetTextDatum(to);
	values[3] = CStringGetTextDatum(c->tx ? c->tx : c->x);
	values[4] = CStringGetTextDatum(c->id ? c->id : "0");
	/*
	 * Ordered by the columns themselves (c.tx, c.id), never by the text
	 * the query returns: an unqualified ORDER BY tx, id names the output
	 * columns, the text casts, and "104497" sorts before "5000".  In 0.1.0
	 * that made a page end at the wrong place, and the next page's
	 * (tx, id) > cursor skipped every change before it: a subscription
	 * silently missed most of a large transaction (test/t/014_divergence.pl).
	 */
	if (SPI_execute_with_args(psprintf("SELECT c.tx::text, c.id::text, c.key::text FROM interop.change_log AS c "
									   "WHERE c.source = $1 AND c.tx >= $2::xid8 AND c.tx < $3::xid8 "
									   "AND (c.tx, c.id) > ($4::xid8, $5::bigint) ORDER BY c.tx, c.id LIMIT %d",
									   svc->max_rows),
							  5, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.change_log");
	nchanges = SPI_processed;
	if (nchanges == 0)
		return false;
	initStringInfo(&keys);
	appendStringInfoChar(&keys, '[');
	for (uint64 r = 0; r < nchanges; r++)
	{
		if (r)
			appendStringInfoString(&keys, ", ");
		appendStringInfoString(&keys, SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 3));
	}
	appendStringInfoChar(&keys, ']');
	*last_tx = SPI_getvalue(SPI_tuptable->vals[nchanges - 1], SPI_tuptable->tupdesc, 1);
	*last_id = SPI_getvalue(SPI_tuptable->vals[nchanges - 1], SPI_tuptable->tupdesc, 2);

	/* each key's row now, as the publisher */
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT k.key::text, pg_catalog.row_to_json(t)::text "
					 "FROM (SELECT DISTINCT e.key FROM pg_catalog.jsonb_array_elements($1::jsonb) AS e(key)) AS k "
					 "LEFT JOIN LATERAL (SELECT * FROM %s AS t WHERE ", t->relname);
	for (int i = 0; i < t->nkey; i++)
	{
		char	   *op = EqualityOperator(t->key_types[i]);

		if (op == NULL)
			elog(ERROR, "type %s of a primary key column has no equality operator", format_type_be(t->key_types[i]));
		appendStringInfo(&sql, "%st.%s %s (k.key OPERATOR(pg_catalog.->>) %s)::%s", i ? " AND " : "",
						 quote_identifier(t->key_names[i]), op, quote_literal_cstr(t->key_names[i]),
						 format_type_be_qualified(t->key_types[i]));
	}
	appendStringInfoString(&sql, ") AS t ON true");
	kvalue = CStringGetTextDatum(keys.data);
	RunAsOwner(svc, sql.data, 1, &ktype, &kvalue);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		char	   *row = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2);
		StringInfo	out = row ? upserts : deletes;

		if (out->len > 0)
			appendStringInfoString(out, ", ");
		appendStringInfoString(out, row ? row : SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1));
		(*nrows)++;
	}
	return nchanges >= (uint64) svc->max_rows;
}

/* Horizon - the current snapshot's xmin and xmax, and where the log was pruned */
static void
Horizon(Oid source, char **xmin, char **xmax, char **below)
{
	Oid			type = OIDOID;
	Datum		value = ObjectIdGetDatum(source);

	if (SPI_execute_with_args("SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text, "
							  "pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text, "
							  "(SELECT below::text FROM interop.change_pruned WHERE source = $1)",
							  1, &type, &value, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the transaction horizon");
	*xmin = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	*xmax = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	*below = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
}

/*
 * StartedChangeLog - where the change log of source starts, when its
 * capture triggers exist but nothing says where they started: after a
 * restore, which brings the triggers back with the table but not the
 * change log.  From now: every older cursor is expired.  NULL when the
 * capture is not set up.
 */
static char *
StartedChangeLog(Oid source)
{
	Oid			type = OIDOID;
	Datum		value = ObjectIdGetDatum(source);

	if (SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = 'interop_capture_insert'",
							  1, &type, &value, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_trigger");
	if (SPI_processed == 0)
		return NULL;
	if (SPI_execute_with_args("INSERT INTO interop.change_pruned (source, below) "
							  "VALUES ($1, (pg_catalog.pg_current_xact_id()::text::numeric + 1)::text::xid8) "
							  "ON CONFLICT (source) DO NOTHING",
							  1, &type, &value, NULL, false, 0) != SPI_OK_INSERT ||
		SPI_execute_with_args("SELECT below::text FROM interop.change_pruned WHERE source = $1",
							  1, &type, &value, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not write interop.change_pruned");
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * CommittedChangesFrom - whether the change log of source has entries of
 * transactions from "from" on that this snapshot sees: committed changes
 * that no answer has carried yet, held back by an older transaction
 * that still runs.
 */
static bool
CommittedChangesFrom(Oid source, const char *from)
{
	Oid			types[2] = {OIDOID, TEXTOID};
	Datum		values[2] = {ObjectIdGetDatum(source), CStringGetTextDatum(from)};

	if (SPI_execute_with_args("SELECT 1 FROM interop.change_log WHERE source = $1 AND tx >= $2::xid8 LIMIT 1",
							  2, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.change_log");
	return SPI_processed > 0;
}

/* XidLess - a < b for decimal transaction ids */
static bool
XidLess(const char *a, const char *b)
{
	size_t		la = strlen(a);
	size_t		lb = strlen(b);

	return la != lb ? la < lb : strcmp(a, b) < 0;
}

/*
 * ServeChanges - answer a verified POST /v1/changes: fills *answer_json
 * (the "columns", "key", "upserts", "deletes", "next", "phase", "more",
 * "complete" claims: docs/protocol.md) and
 * ans (row count, legal basis) and returns true, or fills refusal.
 */
bool
ServeChanges(const ServiceRequest *req, Jsonb *since, ServiceAnswer *ans, char **answer_json,
			 ServiceRefusal *refusal)
{
	Service		svc;
	Tracked		t;
	Cursor		c;
	StringInfoData upserts;
	StringInfoData deletes;
	StringInfoData next;
	StringInfoData out;
	bool		more = false;
	bool		complete = false;	/* every change committed before this answer is in it or before it */
	bool		next_is_copy = false;	/* the cursor sent leads to a page of the copy */
	int			nrows = 0;
	char	   *xmin;
	char	   *xmax;
	char	   *below;

	memset(ans, 0, sizeof(*ans));
	memset(refusal, 0, sizeof(*refusal));
	if (!LoadService(req->service, &svc, refusal) || !AuthorizeConsumer(&svc, req, ans, refusal))
		return false;
	if (!svc.track_changes)
		return Refuse(refusal, 404, "unknown_service",
					  "service \"%s\" does not track changes; it cannot be subscribed to", svc.name);
	if (!ParseCursor(since, &c))
		return Refuse(refusal, 400, "bad_request",
					  "the claim \"since\" is not a cursor of this node; send null to start a copy");
	if (!LoadTracked(&svc, &t, refusal))
		return false;
	Horizon(svc.source, &xmin, &xmax, &below);
	if (below == NULL)
		below = StartedChangeLog(svc.source);

	initStringInfo(&upserts);
	initStringInfo(&deletes);
	initStringInfo(&next);
	if (c.start || c.copy)
	{
		char	   *x = c.start ? xmin : c.x;
		char	   *last;
		bool		bad;

		/* the log must reach back to the copy's first snapshot */
		if (below == NULL || XidLess(x, below))
		{
			if (c.start)
				return Refuse(refusal, 503, "not_ready",
							  "a transaction older than the change capture of service \"%s\" is still running, "
							  "or the capture is not set up; try again later", svc.name);
			return Refuse(refusal, 410, "cursor_expired",
						  "the change log of service \"%s\" no longer reaches this copy; start again with since = null",
						  svc.name);
		}
		last = CopyPage(&svc, &t, c.after, &upserts, &nrows, refusal, &bad);
		if (bad)
			return Refuse(refusal, 400, "bad_request", "the cursor's key does not match the primary key of service \"%s\"",
						  svc.name);
		if (last)
		{
			appendStringInfo(&next, "{\"copy\": \"%s\", \"after\": %s}", x, last);
			more = true;
			next_is_copy = true;
		}
		else
		{
			/* the copy is complete: the changes since its first snapshot follow */
			appendStringInfo(&next, "{\"from\": \"%s\"}", x);
			more = true;
		}
	}
	else
	{
		const char *to = c.to ? c.to : xmin;
		char	   *last_tx = NULL;
		char	   *last_id = NULL;

		if (below == NULL || XidLess(c.x, below) || XidLess(xmax, c.x) || XidLess(xmax, to))
			return Refuse(refusal, 410, "cursor_expired",
						  "the change log of service \"%s\" does not reach this cursor; start again with since = null",
						  svc.name);
		if (XidLess(c.x, to) && ChangePage(&svc, &t, &c, to, &upserts, &deletes, &nrows, &last_tx, &last_id))
		{
			appendStringInfo(&next, "{\"from\": \"%s\", \"to\": \"%s\", \"tx\": \"%s\", \"id\": \"%s\"}",
							 c.x, to, last_tx, last_id);
			more = true;
		}
		else
		{
			/*
			 * The range is served.  A range is fixed when its first page is
			 * served, so transactions may have committed after it: when a
			 * later range is ready already, ask again at once; when
			 * committed changes lie beyond the horizon (an older
			 * transaction still runs), the consumer is not complete.
			 */
			const char *from = XidLess(c.x, to) ? to : c.x;

			appendStringInfo(&next, "{\"from\": \"%s\"}", from);
			more = XidLess(from, xmin);
			complete = !more && !CommittedChangesFrom(svc.source, from);
		}
	}

	initStringInfo(&out);
	appendStringInfoString(&out, "{\"columns\": [");
	for (int i = 0; i < t.ncolumns; i++)
	{
		appendStringInfoString(&out, i ? ", {\"name\": " : "{\"name\": ");
		escape_json(&out, t.column_names[i]);
		appendStringInfoString(&out, ", \"type\": ");
		escape_json(&out, t.column_types[i]);
		appendStringInfoChar(&out, '}');
	}
	appendStringInfoString(&out, "], \"key\": [");
	for (int i = 0; i < t.nkey; i++)
	{
		if (i)
			appendStringInfoString(&out, ", ");
		escape_json(&out, t.key_names[i]);
	}
	appendStringInfo(&out, "], \"upserts\": [%s], \"deletes\": [%s], \"next\": %s, \"phase\": \"%s\", "
					 "\"more\": %s, \"complete\": %s}",
					 upserts.data, deletes.data, next.data, next_is_copy ? "copy" : "changes",
					 more ? "true" : "false", complete ? "true" : "false");
	*answer_json = out.data;
	ans->nrows = nrows;
	return true;
}

/*
 * ApplyChanges - one verified batch into the target, as the subscription's
 * owner (interop.apply_changes, SECURITY INVOKER).  reset: the first page
 * of a copy, which empties the target first; copy: a page of the copy,
 * whose keys all follow the keys already copied.  Sets *applied to the rows
 * written; raises an ERROR when the batch cannot be applied.
 */
bool
ApplyChanges(Oid target, Oid owner, Jsonb *batch, bool reset, bool copy, int64 *applied)
{
	Oid			types[4] = {OIDOID, JSONBOID, BOOLOID, BOOLOID};
	Datum		values[4];
	RoleSwitch	save;
	int			ret;
	bool		isnull;

	values[0] = ObjectIdGetDatum(target);
	values[1] = JsonbPGetDatum(batch);
	values[2] = BoolGetDatum(reset);
	values[3] = BoolGetDatum(copy);
	BecomeRole(owner, &save);
	ret = SPI_execute_with_args("SELECT interop.apply_changes($1::regclass, $2, $3, $4)",
								4, types, values, NULL, false, 1);
	RestoreRole(&save);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not apply a batch: %s", SPI_result_code_string(ret));
	*applied = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return true;
}
