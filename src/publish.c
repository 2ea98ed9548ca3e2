/*-------------------------------------------------------------------------
 *
 * publish.c
 *	  Answering a request for a published service: load the service,
 *	  authorize the consumer, bind the filter values, run the query as the
 *	  publisher and collect the rows.  The gateway calls ServeRequest() for
 *	  every verified request; interop.dry_run() calls it for a provider who
 *	  wants to see what a consumer would get.
 *
 * The steps read top to bottom in ServeRequest():
 *	  LoadService -> AuthorizeConsumer -> BindFilters -> CheckConsent ->
 *	  RunServiceQuery
 * (the filters come before consent: they name the subject).
 * Refusals are not ERRORs: they come back as a ServiceRefusal carrying the
 * wire status and code of docs/protocol.md, because the gateway answers them with a
 * signed error response.  dry_run() turns them into ERRORs.
 *
 * The query is built from the catalog, never from request text: the
 * relation and column names are quoted identifiers taken from pg_class and
 * pg_attribute, the operator is the type's default equality operator named
 * with its schema, and every value is a bound parameter converted by the
 * column type's input function.  Both the conversion of the values (a
 * domain's CHECK runs there) and the query run with the privileges of the
 * role that published the service (BecomeRole: SetUserIdAndSecContext with
 * SECURITY_RESTRICTED_OPERATION), read-only; the query fetches max_rows + 1
 * rows to know whether the answer was truncated.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/typcache.h"


/* Refuse - fill a refusal and return false */
bool
Refuse(ServiceRefusal *r, int status, const char *code, const char *fmt,...)
{
	va_list		ap;
	StringInfoData buf;

	initStringInfo(&buf);
	for (;;)
	{
		int			needed;

		va_start(ap, fmt);
		needed = appendStringInfoVA(&buf, fmt, ap);
		va_end(ap);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	r->http_status = status;
	r->code = code;
	r->message = buf.data;
	return false;
}

/* LoadService - the service row, or a 404 refusal */
bool
LoadService(const char *name, Service *svc, ServiceRefusal *refusal)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	int			ret;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	ret = ExecuteCached("SELECT name, source::oid, filter_columns, subject_column, "
						"requires_consent, max_rows, owner::oid, track_changes "
						"FROM interop.service WHERE name = $1",
						1, argtypes, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.service: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return Refuse(refusal, 404, "unknown_service", "service \"%s\" is not published here", name);

	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	svc->name = SPI_getvalue(tup, desc, 1);
	svc->source = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	d = SPI_getbinval(tup, desc, 3, &isnull);
	{
		ArrayType  *arr = DatumGetArrayTypeP(d);
		Datum	   *elems;
		int			n;

		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, NULL, &n);
		svc->nfilters = n;
		svc->filters = palloc(sizeof(char *) * Max(n, 1));
		for (int i = 0; i < n; i++)
			svc->filters[i] = TextDatumGetCString(elems[i]);
	}
	svc->subject_column = SPI_getvalue(tup, desc, 4);
	svc->requires_consent = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
	svc->max_rows = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
	svc->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 7, &isnull));
	svc->track_changes = DatumGetBool(SPI_getbinval(tup, desc, 8, &isnull));
	return true;
}

/* AuthorizeConsumer - an access grant for this consumer and purpose, or 403 */
bool
AuthorizeConsumer(const Service *svc, const ServiceRequest *req, ServiceAnswer *ans,
				  ServiceRefusal *refusal)
{
	Oid			argtypes[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	int			ret;
	bool		any_purpose;
	bool		isnull;

	values[0] = CStringGetTextDatum(svc->name);
	values[1] = CStringGetTextDatum(req->consumer);
	values[2] = req->purpose ? CStringGetTextDatum(req->purpose) : (Datum) 0;
	ret = ExecuteCached("SELECT purposes IS NULL, $3 = ANY (purposes), legal_basis "
						"FROM interop.access_grant "
						"WHERE service = $1 AND consumer = $2::interop.member_id",
						3, argtypes, values, req->purpose ? "   " : "  n", true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.access_grant: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return Refuse(refusal, 403, "access_denied",
					  "%s has no access to service \"%s\"", req->consumer, svc->name);

	any_purpose = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (!any_purpose)
	{
		Datum		allowed = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);

		if (req->purpose == NULL)
			return Refuse(refusal, 403, "purpose_not_allowed",
						  "service \"%s\" requires a purpose for %s", svc->name, req->consumer);
		if (isnull || !DatumGetBool(allowed))
			return Refuse(refusal, 403, "purpose_not_allowed",
						  "purpose \"%s\" is not granted to %s for service \"%s\"",
						  req->purpose, req->consumer, svc->name);
	}
	ans->legal_basis = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	return true;
}

/*
 * CheckConsent - a service with requires_consent answers only a request
 * that names one subject (by filtering on the subject column) for a
 * purpose, when that subject has a valid consent for this consumer,
 * service and purpose (consent.c).  The consent found goes into the log.
 */
static bool
CheckConsent(const Service *svc, const ServiceRequest *req, ServiceAnswer *ans,
			 ServiceRefusal *refusal)
{
	if (!svc->requires_consent)
		return true;
	if (ans->subject == NULL)
		return Refuse(refusal, 403, "consent_required",
					  "service \"%s\" answers only requests for one subject: filter on \"%s\"",
					  svc->name, svc->subject_column);
	if (req->purpose == NULL)
		return Refuse(refusal, 403, "consent_required",
					  "service \"%s\" needs the subject's consent, which is given for a purpose; the request names none",
					  svc->name);
	ans->consent_id = ValidConsent(ans->subject, req->consumer, svc->name, req->purpose);
	if (ans->consent_id == 0)
		return Refuse(refusal, 403, "consent_required",
					  "the subject has no valid consent for %s to use service \"%s\" for purpose \"%s\"",
					  req->consumer, svc->name, req->purpose);
	return true;
}

/* a filter bound to a parameter */
typedef struct BoundFilter
{
	AttrNumber	attnum;
	Oid			type;
	Datum		value;
} BoundFilter;

/*
 * ConvertValue - text through a type's input function, as the publisher
 * (owner): the input function of a domain runs its CHECK constraints,
 * which anyone who may create a domain can write.  On failure returns
 * false and sets *message (the input error is the client's mistake, so it
 * is caught in a subtransaction and reported, not raised).
 */
static bool
ConvertValue(Oid type, Oid owner, char *text, Datum *value, char **message)
{
	Oid			typinput;
	Oid			typioparam;
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool ok = true;

	getTypeInputInfo(type, &typinput, &typioparam);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		RoleSwitch	save;

		BecomeRole(owner, &save);
		*value = OidInputFunctionCall(typinput, text, typioparam, -1);
		RestoreRole(&save);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		*message = edata->message;
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	return ok;
}

/*
 * BindFilters - every key of params must be a declared filter column with a
 * scalar value that the column's type accepts; each becomes a parameter.
 */
static bool
BindFilters(const Service *svc, Jsonb *params, BoundFilter **filters, int *nfilters,
			char **subject, ServiceRefusal *refusal)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			n = 0;
	BoundFilter *out;
	char	   *key = NULL;

	if (!JB_ROOT_IS_OBJECT(params))
		return Refuse(refusal, 400, "bad_request", "params must be a JSON object");
	out = palloc0(sizeof(BoundFilter) * Max(JB_ROOT_COUNT(params), 1));

	it = JsonbIteratorInit(&params->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			bool		declared = false;

			key = pnstrdup(v.val.string.val, v.val.string.len);
			for (int i = 0; i < svc->nfilters; i++)
				if (strcmp(svc->filters[i], key) == 0)
					declared = true;
			if (!declared)
				return Refuse(refusal, 400, "bad_request",
							  "\"%s\" is not a filter of service \"%s\"", key, svc->name);
		}
		else if (tok == WJB_VALUE)
		{
			char	   *text;
			char	   *message;
			AttrNumber	attnum = get_attnum(svc->source, key);

			if (v.type == jbvString)
				text = pnstrdup(v.val.string.val, v.val.string.len);
			else if (v.type == jbvNumeric)
				text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
			else if (v.type == jbvBool)
				text = v.val.boolean ? "true" : "false";
			else
				return Refuse(refusal, 400, "bad_request",
							  "the value of \"%s\" must be a string, a number or a boolean", key);
			if (attnum == InvalidAttrNumber)
				return Refuse(refusal, 500, "internal_error",
							  "filter column \"%s\" is missing from the source of service \"%s\"",
							  key, svc->name);

			if (svc->subject_column != NULL && strcmp(key, svc->subject_column) == 0)
				*subject = text;
			out[n].attnum = attnum;
			out[n].type = get_atttype(svc->source, attnum);
			if (!ConvertValue(out[n].type, svc->owner, text, &out[n].value, &message))
				return Refuse(refusal, 400, "bad_request", "invalid value for \"%s\": %s", key, message);
			n++;
		}
		else if (tok != WJB_BEGIN_OBJECT && tok != WJB_END_OBJECT)
			return Refuse(refusal, 400, "bad_request", "params must be a flat JSON object");
	}
	*filters = out;
	*nfilters = n;
	return true;
}

/* EqualityOperator - "OPERATOR(schema.=)" for a type, or NULL */
char *
EqualityOperator(Oid type)
{
	TypeCacheEntry *tc = lookup_type_cache(type, TYPECACHE_EQ_OPR);
	HeapTuple	tup;
	Form_pg_operator op;
	char	   *result;

	if (!OidIsValid(tc->eq_opr))
		return NULL;
	tup = SearchSysCache1(OPEROID, ObjectIdGetDatum(tc->eq_opr));
	if (!HeapTupleIsValid(tup))
		return NULL;
	op = (Form_pg_operator) GETSTRUCT(tup);
	result = psprintf("OPERATOR(%s.%s)", quote_identifier(get_namespace_name(op->oprnamespace)),
					  NameStr(op->oprname));
	ReleaseSysCache(tup);
	return result;
}

/* RunServiceQuery - the rows, as the publisher, at most max_rows of them */
static bool
RunServiceQuery(const Service *svc, BoundFilter *filters, int nfilters, ServiceAnswer *ans,
				ServiceRefusal *refusal)
{
	StringInfoData sql;
	Relation	rel;
	TupleDesc	desc;
	Oid		   *argtypes = palloc(sizeof(Oid) * Max(nfilters, 1));
	Datum	   *values = palloc(sizeof(Datum) * Max(nfilters, 1));
	RoleSwitch	save;
	int			ret = 0;
	int			ncols = 0;

	/* the columns, from the catalog */
	rel = try_relation_open(svc->source, AccessShareLock);
	if (rel == NULL)
		return Refuse(refusal, 500, "internal_error",
					  "the source of service \"%s\" was dropped", svc->name);
	desc = RelationGetDescr(rel);
	ans->column_names = palloc(sizeof(char *) * Max(desc->natts, 1));
	ans->column_types = palloc(sizeof(char *) * Max(desc->natts, 1));

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT pg_catalog.jsonb_build_array(");
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		if (ncols > 0)
			appendStringInfoString(&sql, ", ");
		appendStringInfo(&sql, "t.%s", quote_identifier(NameStr(att->attname)));
		ans->column_names[ncols] = pstrdup(NameStr(att->attname));
		ans->column_types[ncols] = format_type_be(att->atttypid);
		ncols++;
	}
	ans->ncolumns = ncols;
	appendStringInfo(&sql, ") FROM %s AS t",
					 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												RelationGetRelationName(rel)));
	relation_close(rel, NoLock);

	for (int i = 0; i < nfilters; i++)
	{
		char	   *op = EqualityOperator(filters[i].type);

		if (op == NULL)
			return Refuse(refusal, 500, "internal_error",
						  "column type %s of service \"%s\" has no equality operator",
						  format_type_be(filters[i].type), svc->name);
		appendStringInfo(&sql, "%s t.%s %s $%d", i == 0 ? " WHERE" : " AND",
						 quote_identifier(get_attname(svc->source, filters[i].attnum, false)),
						 op, i + 1);
		argtypes[i] = filters[i].type;
		values[i] = filters[i].value;
	}
	appendStringInfo(&sql, " LIMIT %d", svc->max_rows + 1);

	/* run as the publisher */
	BecomeRole(svc->owner, &save);
	ret = ExecuteCached(sql.data, nfilters, argtypes, values, NULL, true, 0);
	RestoreRole(&save);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not run service \"%s\": %s", svc->name, SPI_result_code_string(ret));

	ans->truncated = SPI_processed > (uint64) svc->max_rows;
	ans->nrows = ans->truncated ? svc->max_rows : (int) SPI_processed;
	ans->rows = palloc(sizeof(char *) * Max(ans->nrows, 1));
	for (int i = 0; i < ans->nrows; i++)
		ans->rows[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
	return true;
}

/*
 * ServeRequest - answer a verified request: fills ans and returns true, or
 * fills refusal and returns false.  The caller is connected to SPI.  Filter
 * binding comes before the consent check because consent needs the subject
 * named by the filters.
 */
bool
ServeRequest(const ServiceRequest *req, ServiceAnswer *ans, ServiceRefusal *refusal)
{
	Service		svc;
	BoundFilter *filters = NULL;
	int			nfilters = 0;

	memset(ans, 0, sizeof(*ans));
	memset(refusal, 0, sizeof(*refusal));
	return LoadService(req->service, &svc, refusal) &&
		AuthorizeConsumer(&svc, req, ans, refusal) &&
		BindFilters(&svc, req->params, &filters, &nfilters, &ans->subject, refusal) &&
		CheckConsent(&svc, req, ans, refusal) &&
		RunServiceQuery(&svc, filters, nfilters, ans, refusal);
}

/* AnswerJson - the answer as the "columns", "rows", "truncated" claims */
char *
AnswerJson(const ServiceAnswer *ans)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"columns\": [");
	for (int i = 0; i < ans->ncolumns; i++)
	{
		appendStringInfoString(&buf, i ? ", {\"name\": " : "{\"name\": ");
		escape_json(&buf, ans->column_names[i]);
		appendStringInfoString(&buf, ", \"type\": ");
		escape_json(&buf, ans->column_types[i]);
		appendStringInfoChar(&buf, '}');
	}
	appendStringInfoString(&buf, "], \"rows\": [");
	for (int i = 0; i < ans->nrows; i++)
	{
		if (i)
			appendStringInfoString(&buf, ", ");
		appendStringInfoString(&buf, ans->rows[i]);
	}
	appendStringInfo(&buf, "], \"truncated\": %s}", ans->truncated ? "true" : "false");
	return buf.data;
}

/* RefusalSqlState - the SQLSTATE dry_run() raises for a wire refusal */
static int
RefusalSqlState(const ServiceRefusal *r)
{
	switch (r->http_status)
	{
		case 400:
			return ERRCODE_INVALID_PARAMETER_VALUE;
		case 403:
			return ERRCODE_INSUFFICIENT_PRIVILEGE;
		case 404:
			return ERRCODE_UNDEFINED_OBJECT;
		default:
			return ERRCODE_INTERNAL_ERROR;
	}
}

PG_FUNCTION_INFO_V1(interop_dry_run);
/*
 * interop_dry_run - what the gateway would answer this consumer: the
 * "columns", "rows" and "truncated" claims, or the refusal as an ERROR whose
 * detail names the wire status and code.  Only the service's publisher (or
 * a superuser) may look.
 */
Datum
interop_dry_run(PG_FUNCTION_ARGS)
{
	ServiceRequest req;
	ServiceAnswer ans;
	ServiceRefusal refusal;
	Service		svc;
	bool		ok;
	char	   *json = NULL;
	int			ret;
	MemoryContext callercxt = CurrentMemoryContext;

	req.service = text_to_cstring(PG_GETARG_TEXT_PP(0));
	req.consumer = text_to_cstring(PG_GETARG_TEXT_PP(1));
	req.params = PG_GETARG_JSONB_P(2);
	req.purpose = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));

	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
	if (LoadService(req.service, &svc, &refusal) &&
		!has_privs_of_role(GetUserId(), svc.owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only the publisher of service \"%s\" may dry-run it", req.service),
				 errdetail("The service runs with the privileges of role \"%s\".",
						   GetUserNameFromId(svc.owner, false))));
	ok = ServeRequest(&req, &ans, &refusal);
	if (ok)
		json = MemoryContextStrdup(callercxt, AnswerJson(&ans));
	else
		refusal.message = MemoryContextStrdup(callercxt, refusal.message);
	SPI_finish();
	if (!ok)
		ereport(ERROR,
				(errcode(RefusalSqlState(&refusal)),
				 errmsg("%s", refusal.message),
				 errdetail("The gateway would answer HTTP %d with error code \"%s\".",
						   refusal.http_status, refusal.code)));
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}
