/*-------------------------------------------------------------------------
 *
 * protocol.c
 *	  The wire messages of protocol version 1 (docs/protocol.md): building and
 *	  checking request and response claims.  Shared by the gateway (which
 *	  checks requests and builds responses) and the client (which builds
 *	  requests and checks responses).
 *
 * CheckRequest() applies the verification order of docs/protocol.md to a request
 * body: size -> JWS structure -> "alg" -> "x5c" chain, dates, revocation ->
 * signature (those five in jws.c and x509.c) -> "iss" is the certificate's
 * member id (and the TLS client certificate's) -> "aud" is this node ->
 * "iat"/"exp" within interop.max_clock_skew.  The "jti" replay check needs
 * the message log and is the gateway's next step.  Every failure is an
 * ERROR whose SQLSTATE names the check; WireErrorFor() turns it into the
 * HTTP status and error code of the answer.
 *
 * Verified payloads are parsed with PostgreSQL's jsonb parser, not jansson:
 * numbers stay exact (a 20-digit registry code or a numeric amount must not
 * pass through a double), and the rows of a response become jsonb without a
 * second parse.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include <ctype.h>
#include <time.h>

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

/* the longest lifetime a request may claim (exp - iat) */
#define MAX_REQUEST_LIFETIME 3600

/* UnixNow - seconds since 1970 */
static int64
UnixNow(void)
{
	return (int64) time(NULL);
}

/* NewJti - a random (version 4) UUID in canonical text form */
char *
NewJti(void)
{
	unsigned char u[16];

	if (!pg_strong_random(u, sizeof(u)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random message id")));
	u[6] = (u[6] & 0x0f) | 0x40;
	u[8] = (u[8] & 0x3f) | 0x80;
	return psprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
					u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7],
					u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

/* IsUuid - is s a UUID in canonical (8-4-4-4-12 hex) form? */
static bool
IsUuid(const char *s)
{
	if (strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (s[i] != '-')
				return false;
		}
		else if (!isxdigit((unsigned char) s[i]))
			return false;
	}
	return true;
}

/* BadClaims - raise the "malformed message" error */
static void
BadClaims(const char *what, const char *detail) pg_attribute_noreturn();
static void
BadClaims(const char *what, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INTEROP_INVALID_MESSAGE),
			 errmsg("invalid %s", what),
			 errdetail("%s", detail),
			 errhint("See docs/protocol.md for the claims of each message.")));
	pg_unreachable();
}

/*
 * PayloadJsonb - a verified payload (UTF-8 bytes) as a jsonb object.  What
 * the JSON parser refuses (invalid UTF-8, a \u0000 escape, a lone surrogate,
 * a number beyond numeric, nesting beyond the stack) is the sender's fault:
 * a malformed message, not an internal error.
 */
static Jsonb *
PayloadJsonb(const char *raw, size_t len, const char *what)
{
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *volatile jb = NULL;

	if (memchr(raw, '\0', len) != NULL)
		BadClaims(what, "The payload contains a NUL byte.");
	PG_TRY();
	{
		char	   *s = pg_any_to_server(raw, len, PG_UTF8);

		jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(s)));
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		int			category;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		category = ERRCODE_TO_CATEGORY(edata->sqlerrcode);
		if (category != ERRCODE_DATA_EXCEPTION && category != ERRCODE_PROGRAM_LIMIT_EXCEEDED)
			PG_RE_THROW();
		FlushErrorState();
		BadClaims(what, psprintf("The payload is not acceptable JSON: %s", edata->message));
	}
	PG_END_TRY();
	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		BadClaims(what, "The payload is not a JSON object.");
	return jb;
}

/* Claim - the value of a top-level key, or NULL */
static JsonbValue *
Claim(Jsonb *jb, const char *key)
{
	return getKeyJsonValueFromContainer(&jb->root, key, strlen(key), NULL);
}

/* StringClaim - a string claim as a C string; NULL when absent and optional */
static char *
StringClaim(Jsonb *jb, const char *key, bool required, const char *what)
{
	JsonbValue *v = Claim(jb, key);

	if (v == NULL || v->type == jbvNull)
	{
		if (required)
			BadClaims(what, psprintf("The claim \"%s\" is missing.", key));
		return NULL;
	}
	if (v->type != jbvString)
		BadClaims(what, psprintf("The claim \"%s\" is not a string.", key));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* TimeClaim - a NumericDate claim (seconds since 1970) */
static int64
TimeClaim(Jsonb *jb, const char *key, const char *what)
{
	JsonbValue *v = Claim(jb, key);
	char	   *text;
	char	   *end;
	long long	t;

	if (v == NULL)
		BadClaims(what, psprintf("The claim \"%s\" is missing.", key));
	if (v->type != jbvNumeric)
		BadClaims(what, psprintf("The claim \"%s\" is not a number.", key));
	text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	errno = 0;
	t = strtoll(text, &end, 10);
	if (*end != '\0' || errno != 0 || t < 0 || strlen(text) > 12)
		BadClaims(what, psprintf("The claim \"%s\" is not a time in whole seconds since 1970.", key));
	return (int64) t;
}

/* MemberClaim - a member id claim, canonical */
static char *
MemberClaim(Jsonb *jb, const char *key, const char *what)
{
	char	   *s = StringClaim(jb, key, true, what);
	char	   *canonical;
	char	   *problem;

	if (!MemberIdParse(s, &canonical, &problem))
		BadClaims(what, psprintf("The claim \"%s\" is not a member id: %s", key, problem));
	return canonical;
}

/* AppendJsonString - a JSON string of a C string */
static void
AppendJsonString(StringInfo buf, const char *s)
{
	escape_json(buf, s);
}

/*
 * BuildRequest - the claims of a request, as UTF-8 JSON text.  params_json
 * is a JSON object in the database encoding; purpose may be NULL.
 * since_json, for POST /v1/changes, is the cursor (a JSON object or null),
 * or NULL for a query.
 */
char *
BuildRequest(const char *provider, const char *service, const char *params_json,
			 const char *purpose, const char *jti, int64 lifetime, const char *since_json)
{
	StringInfoData buf;
	int64		now = UnixNow();

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"iss\":");
	AppendJsonString(&buf, GetNodeState()->member_id);
	appendStringInfoString(&buf, ",\"aud\":");
	AppendJsonString(&buf, provider);
	appendStringInfoString(&buf, ",\"svc\":");
	AppendJsonString(&buf, service);
	appendStringInfoString(&buf, ",\"params\":");
	appendStringInfoString(&buf, params_json);
	appendStringInfoString(&buf, ",\"purpose\":");
	if (purpose)
		AppendJsonString(&buf, purpose);
	else
		appendStringInfoString(&buf, "null");
	appendStringInfo(&buf, ",\"iat\":" INT64_FORMAT ",\"exp\":" INT64_FORMAT ",\"jti\":",
					 now, now + lifetime);
	AppendJsonString(&buf, jti);
	if (since_json)
	{
		appendStringInfoString(&buf, ",\"since\":");
		appendStringInfoString(&buf, since_json);
	}
	appendStringInfoChar(&buf, '}');
	return (char *) pg_server_to_any(buf.data, buf.len, PG_UTF8);
}

/*
 * CheckTimes - iat and exp within interop.max_clock_skew of now, and a
 * lifetime no longer than MAX_REQUEST_LIFETIME.
 */
static void
CheckTimes(int64 iat, int64 exp, bool need_exp)
{
	int64		now = UnixNow();
	int64		skew = interop_max_clock_skew;

	if (iat > now + skew)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_CLOCK_SKEW),
				 errmsg("message is issued in the future"),
				 errdetail("Its iat is " INT64_FORMAT " s ahead of this node's clock; at most %d s are accepted (interop.max_clock_skew).",
						   iat - now, interop_max_clock_skew),
				 errhint("Check the clocks of both nodes (NTP).")));
	if (!need_exp)
		return;
	if (exp < now - skew)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_CLOCK_SKEW),
				 errmsg("message has expired"),
				 errdetail("Its exp is " INT64_FORMAT " s in the past; at most %d s are accepted (interop.max_clock_skew).",
						   now - exp, interop_max_clock_skew),
				 errhint("Send a new request with a new jti.")));
	if (exp < iat || exp - iat > MAX_REQUEST_LIFETIME)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_CLOCK_SKEW),
				 errmsg("message lifetime is not acceptable"),
				 errdetail("exp - iat is " INT64_FORMAT " s; it must be between 0 and %d s.",
						   exp - iat, MAX_REQUEST_LIFETIME)));
}

/*
 * CheckRequest - the verification order of docs/protocol.md on a request body.
 * tls_member is the member id of the TLS client certificate, or NULL when
 * the connection had none.  req->hash may hold the body's Sha256Base64Url()
 * already; the rest of req is filled here.  Raises an ERROR naming the
 * first check that failed.
 */
void
CheckRequest(const char *body, size_t len, const char *tls_member, ExchangeRequest *req)
{
	const char *what = "request";
	const char *signer;
	size_t		plen;
	char	   *payload;
	Jsonb	   *jb;
	JsonbValue *params;
	const char *self;
	char	   *jti;
	char	   *iss;

	/* the caller may have hashed the body already, to answer a failure */
	char	   *hash = req->hash ? req->hash : Sha256Base64Url(body, len);

	memset(req, 0, sizeof(*req));
	req->hash = hash;

	/* size, structure, alg, x5c chain, dates, revocation, signature */
	if (len > (size_t) interop_max_request_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("request is too large"),
				 errdetail("The request is %zu bytes; interop.max_request_size is %d.",
						   len, interop_max_request_size)));
	payload = JwsVerifyCompact(body, len, NULL, JWS_TYP_REQUEST, &signer, &plen);
	req->signer = signer ? pstrdup(signer) : NULL;
	jb = PayloadJsonb(payload, plen, what);

	/*
	 * iss is the signer, and the TLS client when there is one.  Until both
	 * hold, req->iss stays NULL: the log names the verified signer, and the
	 * claimed issuer appears only in the error.
	 */
	iss = MemberClaim(jb, "iss", what);
	if (signer == NULL || strcmp(iss, signer) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_MEMBER_MISMATCH),
				 errmsg("request issuer is not its signer"),
				 errdetail("The request claims iss \"%s\" but is signed by \"%s\".",
						   iss, signer ? signer : "(unknown)")));
	if (tls_member != NULL && strcmp(iss, tls_member) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_MEMBER_MISMATCH),
				 errmsg("request issuer is not the TLS client"),
				 errdetail("The request is signed by \"%s\" but the TLS client certificate names \"%s\".",
						   iss, tls_member)));
	req->iss = iss;

	/* aud is this node */
	req->aud = MemberClaim(jb, "aud", what);
	self = GetNodeState()->member_id;
	if (strcmp(req->aud, self) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_WRONG_AUDIENCE),
				 errmsg("request is addressed to another node"),
				 errdetail("Its aud is \"%s\"; this node is \"%s\".", req->aud, self),
				 errhint("Check the base URL of peer \"%s\" on the consumer.", self)));

	/* iat, exp */
	req->iat = TimeClaim(jb, "iat", what);
	req->exp = TimeClaim(jb, "exp", what);
	CheckTimes(req->iat, req->exp, true);

	/* the rest of the claims */
	/* set only once valid: the log records it, in a uuid column */
	jti = StringClaim(jb, "jti", true, what);
	if (!IsUuid(jti))
		BadClaims(what, "The claim \"jti\" is not a UUID.");
	for (char *p = jti; *p; p++)
		*p = pg_ascii_tolower(*p);
	req->jti = jti;
	req->svc = StringClaim(jb, "svc", true, what);
	req->purpose = StringClaim(jb, "purpose", false, what);
	params = Claim(jb, "params");
	if (params == NULL || params->type == jbvNull)
		req->params = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	else if (params->type == jbvBinary && JsonContainerIsObject(params->val.binary.data))
		req->params = JsonbValueToJsonb(params);
	else
		BadClaims(what, "The claim \"params\" is not a JSON object.");
	params = Claim(jb, "since");
	if (params != NULL && params->type == jbvBinary && JsonContainerIsObject(params->val.binary.data))
		req->since = JsonbValueToJsonb(params);
	else if (params != NULL && params->type != jbvNull)
		BadClaims(what, "The claim \"since\" is not a JSON object.");
}

/* AppendBinding - the claims that bind an answer to its request */
static void
AppendBinding(StringInfo buf, const char *aud, const char *jti, const char *req_hash)
{
	appendStringInfoString(buf, "{\"iss\":");
	AppendJsonString(buf, GetNodeState()->member_id);
	if (aud)
	{
		appendStringInfoString(buf, ",\"aud\":");
		AppendJsonString(buf, aud);
	}
	if (jti)
	{
		appendStringInfoString(buf, ",\"jti\":");
		AppendJsonString(buf, jti);
	}
	if (req_hash)
	{
		appendStringInfoString(buf, ",\"req\":");
		AppendJsonString(buf, req_hash);
	}
	appendStringInfo(buf, ",\"iat\":" INT64_FORMAT, UnixNow());
}

/*
 * BuildAnswer - the claims of a successful response as UTF-8 JSON text.
 * subject (may be NULL) is the service's subject named by the request: the
 * "sub" claim, so that the consumer's log names whose data it read.
 * answer_json is the "columns", "rows", "truncated" part as AnswerJson()
 * writes it: a JSON object whose braces are dropped here.
 */
char *
BuildAnswer(const ExchangeRequest *req, const char *subject, const char *answer_json)
{
	StringInfoData buf;
	size_t		n = strlen(answer_json);

	Assert(n >= 2 && answer_json[0] == '{' && answer_json[n - 1] == '}');
	initStringInfo(&buf);
	AppendBinding(&buf, req->iss, req->jti, req->hash);
	if (subject)
	{
		appendStringInfoString(&buf, ",\"sub\":");
		AppendJsonString(&buf, subject);
	}
	appendStringInfoChar(&buf, ',');
	appendBinaryStringInfo(&buf, answer_json + 1, n - 1);
	return (char *) pg_server_to_any(buf.data, buf.len, PG_UTF8);
}

/*
 * BuildError - the claims of an error response.  aud, jti and req_hash are
 * whatever could be read of the request (NULL otherwise).
 */
char *
BuildError(const char *aud, const char *jti, const char *req_hash, const char *code,
		   const char *message)
{
	StringInfoData buf;

	initStringInfo(&buf);
	AppendBinding(&buf, aud, jti, req_hash);
	appendStringInfoString(&buf, ",\"error\":{\"code\":");
	AppendJsonString(&buf, code);
	appendStringInfoString(&buf, ",\"message\":");
	AppendJsonString(&buf, message);
	appendStringInfoString(&buf, "}}");
	return (char *) pg_server_to_any(buf.data, buf.len, PG_UTF8);
}

/*
 * CheckResponse - verify a response to the request whose jti and hash are
 * given, from the provider it was sent to.  Returns the payload; sets
 * *error_code and *error_message for a signed error response (else NULL).
 * With req_hash NULL (a GET, which has no body) only a refusal passes.
 */
Jsonb *
CheckResponse(const char *body, size_t len, const char *provider, const char *jti,
			  const char *req_hash, char **error_code, char **error_message)
{
	const char *what = "response";
	const char *signer;
	size_t		plen;
	char	   *payload;
	Jsonb	   *jb;
	char	   *iss;
	char	   *aud;
	char	   *rjti;
	char	   *rreq;
	JsonbValue *err;
	bool		refusal;
	const char *self = GetNodeState()->member_id;

	payload = JwsVerifyCompact(body, len, NULL, JWS_TYP_RESPONSE, &signer, &plen);
	jb = PayloadJsonb(payload, plen, what);

	iss = MemberClaim(jb, "iss", what);
	if (signer == NULL || strcmp(iss, signer) != 0 || strcmp(iss, provider) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_MEMBER_MISMATCH),
				 errmsg("response is not from the provider that was called"),
				 errdetail("The request went to \"%s\"; the response claims iss \"%s\" and is signed by \"%s\".",
						   provider, iss, signer ? signer : "(unknown)")));

	/*
	 * Bound to our request: aud, jti and the hash of the request bytes.  A
	 * refusal of a request the provider could not verify (its clock, our
	 * certificate...) has no aud or jti, only req: the hash of exactly the
	 * bytes we sent, which is binding enough for an error that carries no
	 * data, and lets the caller see why it was refused.
	 */
	err = Claim(jb, "error");
	refusal = err != NULL && err->type != jbvNull;
	aud = StringClaim(jb, "aud", false, what);
	rjti = StringClaim(jb, "jti", false, what);
	rreq = StringClaim(jb, "req", false, what);
	if (req_hash == NULL)
	{
		/* a GET has no body to bind to: only a refusal may come back this way */
		if (!refusal)
			ereport(ERROR,
					(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
					 errmsg("response is not bound to a request"),
					 errdetail("Only a signed refusal answers a request without a body this way.")));
	}
	else if ((aud == NULL ? !refusal : strcmp(aud, self) != 0) ||
		(rjti == NULL ? !refusal : pg_strcasecmp(rjti, jti) != 0) ||
		rreq == NULL || strcmp(rreq, req_hash) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_WRONG_AUDIENCE),
				 errmsg("response is not bound to this request"),
				 errdetail("Expected aud \"%s\", jti \"%s\", req \"%s\"; the response has aud %s, jti %s, req %s.",
						   self, jti, req_hash,
						   aud ? quote_literal_cstr(aud) : "(none)",
						   rjti ? quote_literal_cstr(rjti) : "(none)",
						   rreq ? quote_literal_cstr(rreq) : "(none)")));
	CheckTimes(TimeClaim(jb, "iat", what), 0, false);

	*error_code = *error_message = NULL;
	if (refusal)
	{
		Jsonb	   *e;

		if (err->type != jbvBinary || !JsonContainerIsObject(err->val.binary.data))
			BadClaims(what, "The claim \"error\" is not an object.");
		e = JsonbValueToJsonb(err);
		*error_code = StringClaim(e, "code", true, what);
		*error_message = StringClaim(e, "message", false, what);
		if (*error_message == NULL)
			*error_message = pstrdup("(no message)");
	}
	return jb;
}

/* ServiceNameValid - the shape publish() allows: ^[a-z][a-z0-9_-]{0,62}$ */
static bool
ServiceNameValid(const char *s, size_t len)
{
	if (len == 0 || len > 63 || s[0] < 'a' || s[0] > 'z')
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
			return false;
	return true;
}

/* BadCatalog - raise the "invalid catalog" error for service i */
static void
BadCatalog(const char *provider, int i, const char *detail) pg_attribute_noreturn();
static void
BadCatalog(const char *provider, int i, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
			 errmsg("invalid catalog from %s", provider),
			 i >= 0 ? errdetail("Service %d: %s", i + 1, detail) : errdetail("%s", detail),
			 errhint("A peer's catalog is checked before anything is made of it; see docs/protocol.md, GET /v1/catalog.")));
	pg_unreachable();
}

/* ObjectField - a member of a JSON object container, or NULL */
static JsonbValue *
ObjectField(JsonbContainer *c, const char *key)
{
	return getKeyJsonValueFromContainer(c, key, strlen(key), NULL);
}

/* CheckCatalogService - one entry of a catalog's "services", or an ERROR */
static void
CheckCatalogService(const char *provider, int i, JsonbValue *svc)
{
	JsonbContainer *c;
	JsonbValue *v;
	JsonbValue *cols;
	JsonbValue *filters;
	int			ncols;
	char	  **names;

	if (svc == NULL || svc->type != jbvBinary || !JsonContainerIsObject(svc->val.binary.data))
		BadCatalog(provider, i, "it is not an object.");
	c = svc->val.binary.data;
	v = ObjectField(c, "name");
	if (v == NULL || v->type != jbvString || !ServiceNameValid(v->val.string.val, v->val.string.len))
		BadCatalog(provider, i, "its name is not 1 to 63 lower-case letters, digits, \"_\" or \"-\", starting with a letter.");
	v = ObjectField(c, "description");
	if (v != NULL && v->type != jbvNull && (v->type != jbvString || v->val.string.len > 10000))
		BadCatalog(provider, i, "its description is not a string of at most 10000 bytes.");

	cols = ObjectField(c, "columns");
	if (cols == NULL || cols->type != jbvBinary || !JsonContainerIsArray(cols->val.binary.data))
		BadCatalog(provider, i, "its columns are not an array.");
	ncols = JsonContainerSize(cols->val.binary.data);
	if (ncols > MaxTupleAttributeNumber)
		BadCatalog(provider, i, "it has more columns than a table can.");
	names = palloc(sizeof(char *) * Max(ncols, 1));
	for (int j = 0; j < ncols; j++)
	{
		JsonbValue *col = getIthJsonbValueFromContainer(cols->val.binary.data, j);
		JsonbValue *n = NULL;
		JsonbValue *t = NULL;

		if (col != NULL && col->type == jbvBinary && JsonContainerIsObject(col->val.binary.data))
		{
			n = ObjectField(col->val.binary.data, "name");
			t = ObjectField(col->val.binary.data, "type");
		}
		/* a column name becomes an identifier here: it must fit one, whole */
		if (n == NULL || n->type != jbvString || n->val.string.len == 0 || n->val.string.len >= NAMEDATALEN)
			BadCatalog(provider, i, psprintf("column %d has no name of 1 to %d bytes.", j + 1, NAMEDATALEN - 1));
		if (t == NULL || t->type != jbvString || t->val.string.len == 0 || t->val.string.len > 128)
			BadCatalog(provider, i, psprintf("column %d has no type name of 1 to 128 bytes.", j + 1));
		names[j] = pnstrdup(n->val.string.val, n->val.string.len);
		for (int k = 0; k < j; k++)
			if (strcmp(names[k], names[j]) == 0)
				BadCatalog(provider, i, psprintf("column \"%s\" appears twice.", names[j]));
	}

	filters = ObjectField(c, "filters");
	if (filters == NULL || filters->type != jbvBinary || !JsonContainerIsArray(filters->val.binary.data))
		BadCatalog(provider, i, "its filters are not an array.");
	for (int j = 0; j < (int) JsonContainerSize(filters->val.binary.data); j++)
	{
		JsonbValue *f = getIthJsonbValueFromContainer(filters->val.binary.data, j);
		bool		found = false;

		if (f == NULL || f->type != jbvString)
			BadCatalog(provider, i, psprintf("filter %d is not a string.", j + 1));
		for (int k = 0; k < ncols && !found; k++)
			found = strlen(names[k]) == f->val.string.len &&
				memcmp(names[k], f->val.string.val, f->val.string.len) == 0;
		if (!found)
			BadCatalog(provider, i, psprintf("filter %d is not one of its columns.", j + 1));
		for (int k = 0; k < j; k++)
		{
			JsonbValue *g = getIthJsonbValueFromContainer(filters->val.binary.data, k);

			if (g->val.string.len == f->val.string.len &&
				memcmp(g->val.string.val, f->val.string.val, f->val.string.len) == 0)
				BadCatalog(provider, i, psprintf("filter %d appears twice.", j + 1));
		}
	}
	v = ObjectField(c, "purposes");
	if (v != NULL && v->type != jbvNull &&
		(v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data)))
		BadCatalog(provider, i, "its purposes are neither null nor an array.");
}

/*
 * CheckCatalog - verify a GET /v1/catalog answer of provider: signed by it,
 * addressed to this node, not from the future, and every service in a
 * shape that can be turned into SQL identifiers without surprise.  Returns
 * the "services" array.
 */
Jsonb *
CheckCatalog(const char *body, size_t len, const char *provider)
{
	const char *what = "catalog";
	const char *signer;
	size_t		plen;
	char	   *payload;
	Jsonb	   *jb;
	JsonbValue *v;
	char	   *iss;
	char	   *aud;

	payload = JwsVerifyCompact(body, len, NULL, JWS_TYP_CATALOG, &signer, &plen);
	jb = PayloadJsonb(payload, plen, what);
	iss = MemberClaim(jb, "iss", what);
	if (signer == NULL || strcmp(iss, signer) != 0 || strcmp(iss, provider) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_MEMBER_MISMATCH),
				 errmsg("catalog is not signed by %s", provider),
				 errdetail("It claims iss \"%s\" and is signed by \"%s\".", iss, signer ? signer : "(unknown)")));
	aud = MemberClaim(jb, "aud", what);
	if (strcmp(aud, GetNodeState()->member_id) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_WRONG_AUDIENCE),
				 errmsg("catalog of %s is addressed to another node", provider),
				 errdetail("Its aud is \"%s\"; this node is \"%s\".", aud, GetNodeState()->member_id)));
	CheckTimes(TimeClaim(jb, "iat", what), 0, false);
	v = Claim(jb, "services");
	if (v == NULL || v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		BadCatalog(provider, -1, "The payload has no \"services\" array.");
	for (int i = 0; i < (int) JsonContainerSize(v->val.binary.data); i++)
		CheckCatalogService(provider, i, getIthJsonbValueFromContainer(v->val.binary.data, i));
	return JsonbValueToJsonb(v);
}

/*
 * AnswerRowsToTuplestore - the rows of a verified answer, one jsonb object
 * each, keyed by the answer's column names; an ERROR when "columns" and
 * "rows" are not what an answer has
 */
int
AnswerRowsToTuplestore(Jsonb *payload, Tuplestorestate *ts, TupleDesc desc)
{
	JsonbValue *columns = ResponseClaim(payload, "columns");
	JsonbValue *rows = ResponseClaim(payload, "rows");
	int			ncols;
	int			nrows;
	JsonbValue **names;

	if (columns == NULL || columns->type != jbvBinary || !JsonContainerIsArray(columns->val.binary.data) ||
		rows == NULL || rows->type != jbvBinary || !JsonContainerIsArray(rows->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
				 errmsg("invalid response: \"columns\" and \"rows\" must be arrays")));
	ncols = JsonContainerSize(columns->val.binary.data);
	nrows = JsonContainerSize(rows->val.binary.data);
	names = palloc(sizeof(JsonbValue *) * Max(ncols, 1));
	for (int i = 0; i < ncols; i++)
	{
		JsonbValue *c = getIthJsonbValueFromContainer(columns->val.binary.data, i);
		JsonbValue *n = NULL;

		if (c != NULL && c->type == jbvBinary && JsonContainerIsObject(c->val.binary.data))
			n = getKeyJsonValueFromContainer(c->val.binary.data, "name", 4, NULL);
		if (n == NULL || n->type != jbvString)
			ereport(ERROR,
					(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
					 errmsg("invalid response: column %d has no name", i + 1)));
		names[i] = n;
	}
	for (int r = 0; r < nrows; r++)
	{
		JsonbValue *row = getIthJsonbValueFromContainer(rows->val.binary.data, r);
		JsonbParseState *state = NULL;
		JsonbValue *obj;
		Datum		value;
		bool		isnull = false;

		if (row == NULL || row->type != jbvBinary || !JsonContainerIsArray(row->val.binary.data) ||
			(int) JsonContainerSize(row->val.binary.data) != ncols)
			ereport(ERROR,
					(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
					 errmsg("invalid response: row %d is not an array of %d values", r + 1, ncols)));
		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		for (int c = 0; c < ncols; c++)
		{
			pushJsonbValue(&state, WJB_KEY, names[c]);
			pushJsonbValue(&state, WJB_VALUE, getIthJsonbValueFromContainer(row->val.binary.data, c));
		}
		obj = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
		value = JsonbPGetDatum(JsonbValueToJsonb(obj));
		tuplestore_putvalues(ts, desc, &value, &isnull);
	}
	return nrows;
}

/* ArrayClaimSize - the length of an array claim, or -1 */
static int
ArrayClaimSize(Jsonb *payload, const char *key)
{
	JsonbValue *v = Claim(payload, key);

	return (v && v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data)) ?
		(int) JsonContainerSize(v->val.binary.data) : -1;
}

/*
 * CheckBatch - the claims of a verified POST /v1/changes answer (status
 * 200) from provider: "key", "upserts", "deletes", "next" (the provider's
 * cursor, kept opaque, at most MAX_CURSOR_SIZE bytes), "phase" of the next
 * pull, "more", "complete".  Fills b or raises IX011.
 */
void
CheckBatch(Jsonb *payload, const char *provider, Batch *b)
{
	JsonbValue *v;
	char	   *phase;

	memset(b, 0, sizeof(*b));
	b->nupserts = ArrayClaimSize(payload, "upserts");
	b->ndeletes = ArrayClaimSize(payload, "deletes");
	v = Claim(payload, "next");
	if (b->nupserts < 0 || b->ndeletes < 0 || ArrayClaimSize(payload, "key") < 1 ||
		v == NULL || v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
				 errmsg("invalid batch from %s", provider),
				 errdetail("A batch has the claims key, upserts, deletes and next.")));
	b->next = JsonbToCString(NULL, v->val.binary.data, -1);
	/* the cursor is the provider's, stored and sent back: bounded like any input */
	if (strlen(b->next) > MAX_CURSOR_SIZE)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
				 errmsg("invalid batch from %s", provider),
				 errdetail("Its cursor (\"next\") is %zu bytes; at most %d are accepted.", strlen(b->next), MAX_CURSOR_SIZE)));
	phase = StringClaim(payload, "phase", false, "batch");
	if (phase == NULL || (strcmp(phase, "copy") != 0 && strcmp(phase, "changes") != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
				 errmsg("invalid batch from %s", provider),
				 errdetail("Its \"phase\" is %s; a batch says \"copy\" or \"changes\" (a provider of interop 0.1.0 says nothing: update it).",
						   phase ? quote_literal_cstr(phase) : "missing")));
	b->next_copy = strcmp(phase, "copy") == 0;
	v = Claim(payload, "more");
	b->more = v != NULL && v->type == jbvBool && v->val.boolean;
	v = Claim(payload, "complete");
	b->complete = v != NULL && v->type == jbvBool && v->val.boolean;
}

/* ResponseClaim - a claim of a checked response, for the client */
JsonbValue *
ResponseClaim(Jsonb *jb, const char *key)
{
	return Claim(jb, key);
}

/*
 * WireErrorFor - the HTTP status and error code of docs/protocol.md for a
 * failed check, by its SQLSTATE.
 */
void
WireErrorFor(int sqlstate, int *status, const char **code)
{
	switch (sqlstate)
	{
		case ERRCODE_INTEROP_INVALID_SIGNATURE:
			*status = 401, *code = "invalid_signature";
			break;
		case ERRCODE_INTEROP_UNTRUSTED_CERTIFICATE:
			*status = 401, *code = "untrusted_certificate";
			break;
		case ERRCODE_INTEROP_CERTIFICATE_NOT_VALID:
			*status = 401, *code = "certificate_not_valid";
			break;
		case ERRCODE_INTEROP_CERTIFICATE_REVOKED:
			*status = 401, *code = "certificate_revoked";
			break;
		case ERRCODE_INTEROP_ALGORITHM_REFUSED:
			*status = 401, *code = "algorithm_refused";
			break;
		case ERRCODE_INTEROP_MEMBER_MISMATCH:
			*status = 401, *code = "member_mismatch";
			break;
		case ERRCODE_INTEROP_WRONG_AUDIENCE:
			*status = 401, *code = "wrong_audience";
			break;
		case ERRCODE_INTEROP_CLOCK_SKEW:
			*status = 401, *code = "clock_skew";
			break;
		case ERRCODE_INTEROP_REVOCATION_UNKNOWN:
			*status = 503, *code = "revocation_unknown";
			break;
		case ERRCODE_INTEROP_INVALID_MESSAGE:
		case ERRCODE_INVALID_TEXT_REPRESENTATION:
		case ERRCODE_UNTRANSLATABLE_CHARACTER:
		case ERRCODE_CHARACTER_NOT_IN_REPERTOIRE:
			*status = 400, *code = "bad_request";
			break;
		case ERRCODE_PROGRAM_LIMIT_EXCEEDED:
			*status = 413, *code = "too_large";
			break;
		case ERRCODE_QUERY_CANCELED:
			*status = 500, *code = "timeout";
			break;
		default:
			*status = 500, *code = "internal_error";
			break;
	}
}

/* ---- cosignatures: a node's newest seals, and a witness's answer ---- */

/* Int64Claim - an integer claim; *present false when absent or null */
int64
Int64Claim(Jsonb *jb, const char *key, bool *present, const char *what)
{
	JsonbValue *v = Claim(jb, key);
	char	   *text;
	char	   *end;
	long long	n;

	*present = false;
	if (v == NULL || v->type == jbvNull)
		return 0;
	if (v->type != jbvNumeric)
		BadClaims(what, psprintf("The claim \"%s\" is not a number.", key));
	text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	errno = 0;
	n = strtoll(text, &end, 10);
	if (*end != '\0' || errno != 0 || n <= 0)
		BadClaims(what, psprintf("The claim \"%s\" is not a positive integer.", key));
	*present = true;
	return (int64) n;
}

/*
 * BuildHeadRequest - the claims of POST /v1/cosign: this node's seals
 * from the one its witness cosigned last (from) to its newest, the head
 */
char *
BuildHeadRequest(const char *witness, const char *jti, bool has_from, int64 from,
				 const HeadSeal *seals, int nseals)
{
	StringInfoData buf;
	int64		now = UnixNow();

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"iss\":");
	AppendJsonString(&buf, GetNodeState()->member_id);
	appendStringInfoString(&buf, ",\"aud\":");
	AppendJsonString(&buf, witness);
	appendStringInfo(&buf, ",\"iat\":" INT64_FORMAT ",\"exp\":" INT64_FORMAT ",\"jti\":", now, now + 300);
	AppendJsonString(&buf, jti);
	if (has_from)
		appendStringInfo(&buf, ",\"from\":" INT64_FORMAT, from);
	else
		appendStringInfoString(&buf, ",\"from\":null");
	appendStringInfoString(&buf, ",\"seals\":[");
	for (int i = 0; i < nseals; i++)
	{
		appendStringInfo(&buf, "%s{\"id\":" INT64_FORMAT ",\"jws\":", i ? "," : "", seals[i].id);
		AppendJsonString(&buf, seals[i].jws);
		appendStringInfoChar(&buf, '}');
	}
	appendStringInfoString(&buf, "]}");
	return (char *) pg_server_to_any(buf.data, buf.len, PG_UTF8);
}

/* SealPayloadOf - the payload of a seal's compact JWS, unverified, or NULL */
static Jsonb *
SealPayloadOf(const char *jws)
{
	const char *dot1 = strchr(jws, '.');
	const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	size_t		len;
	char	   *raw;

	if (dot2 == NULL || strchr(dot2 + 1, '.') != NULL)
		return NULL;
	raw = (char *) Base64UrlDecode(dot1 + 1, dot2 - dot1 - 1, &len);
	if (raw == NULL)
		return NULL;
	return PayloadJsonb(raw, len, "seal in a request to cosign");
}

/*
 * CheckHeadRequest - verify POST /v1/cosign: signed as an "interop-head"
 * by the TLS client, addressed to this node, in date, with 1 to
 * MAX_HEAD_SEALS seals of the signer, each the "prev" of the next.  The
 * seals' own signatures are the node's word as much as the request's: the
 * request's signature is what a witness relies on.
 */
void
CheckHeadRequest(const char *body, size_t len, const char *tls_member, HeadRequest *hr)
{
	const char *what = "request to cosign";
	size_t		plen;
	char	   *payload;
	Jsonb	   *jb;
	char	   *aud;
	JsonbValue *v;
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken tok;
	char	   *hash = hr->hash ? hr->hash : Sha256Base64Url(body, len);
	int			n = 0;

	memset(hr, 0, sizeof(*hr));
	hr->hash = hash;
	if (len > (size_t) interop_max_request_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("request is too large"),
				 errdetail("The request is %zu bytes; interop.max_request_size is %d.",
						   len, interop_max_request_size)));
	payload = JwsVerifyCompact(body, len, NULL, JWS_TYP_HEAD, &hr->signer, &plen);
	jb = PayloadJsonb(payload, plen, what);
	hr->iss = MemberClaim(jb, "iss", what);
	if (hr->signer == NULL || strcmp(hr->iss, hr->signer) != 0 ||
		(tls_member != NULL && strcmp(hr->iss, tls_member) != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_MEMBER_MISMATCH),
				 errmsg("request issuer is not its signer and TLS client"),
				 errdetail("The request claims iss \"%s\", is signed by \"%s\" and came from \"%s\".",
						   hr->iss, hr->signer ? hr->signer : "(unknown)", tls_member ? tls_member : "(no certificate)")));
	aud = MemberClaim(jb, "aud", what);
	if (strcmp(aud, GetNodeState()->member_id) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_WRONG_AUDIENCE),
				 errmsg("request is addressed to another node"),
				 errdetail("Its aud is \"%s\"; this node is \"%s\".", aud, GetNodeState()->member_id),
				 errhint("Check the witness's base URL in interop.peer on the node that sent it.")));
	CheckTimes(TimeClaim(jb, "iat", what), TimeClaim(jb, "exp", what), true);
	hr->jti = StringClaim(jb, "jti", true, what);
	if (!IsUuid(hr->jti))
		BadClaims(what, "The claim \"jti\" is not a UUID.");
	for (char *p = hr->jti; *p; p++)
		*p = pg_ascii_tolower(*p);
	hr->from = Int64Claim(jb, "from", &hr->has_from, what);

	v = Claim(jb, "seals");
	if (v == NULL || v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data) ||
		JsonContainerSize(v->val.binary.data) < 1 || JsonContainerSize(v->val.binary.data) > MAX_HEAD_SEALS)
		BadClaims(what, psprintf("The claim \"seals\" is not an array of 1 to %d seals.", MAX_HEAD_SEALS));
	hr->seals = palloc0(sizeof(HeadSeal) * JsonContainerSize(v->val.binary.data));
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		HeadSeal   *s;
		Jsonb	   *sj;
		Jsonb	   *sp;
		bool		present;
		char	   *node;
		char	   *typ;

		if (tok != WJB_ELEM)
			continue;
		if (elem.type != jbvBinary || !JsonContainerIsObject(elem.val.binary.data))
			BadClaims(what, psprintf("Seal %d of \"seals\" is not an object.", n + 1));
		s = &hr->seals[n];
		sj = JsonbValueToJsonb(&elem);
		s->id = Int64Claim(sj, "id", &present, what);
		if (!present)
			BadClaims(what, psprintf("Seal %d of \"seals\" has no \"id\".", n + 1));
		s->jws = StringClaim(sj, "jws", true, what);
		typ = JwsHeaderTyp(s->jws);
		if (typ == NULL || strcmp(typ, JwsTypName(JWS_TYP_SEAL)) != 0 || (sp = SealPayloadOf(s->jws)) == NULL)
			BadClaims(what, psprintf("Seal " INT64_FORMAT " is not a compact JWS of typ \"interop-seal\".", s->id));
		node = StringClaim(sp, "node", true, what);
		if (strcmp(node, hr->iss) != 0)
			BadClaims(what, psprintf("Seal " INT64_FORMAT " is a seal of \"%s\", not of \"%s\".", s->id, node, hr->iss));
		s->prev = StringClaim(sp, "prev", false, what);
		s->hash = Sha256Base64Url(s->jws, strlen(s->jws));
		if (n > 0 && s->id <= hr->seals[n - 1].id)
			BadClaims(what, "The seals are not in increasing order of id.");
		if (n > 0 && (s->prev == NULL || strcmp(s->prev, hr->seals[n - 1].hash) != 0))
			BadClaims(what, psprintf("Seal " INT64_FORMAT " does not follow seal " INT64_FORMAT ": its \"prev\" is not the hash of that seal.",
									 s->id, hr->seals[n - 1].id));
		n++;
	}
	hr->nseals = n;
}

/* BuildCosignature - the claims of a witness's cosignature of the head of hr */
char *
BuildCosignature(const HeadRequest *hr, const char *cosigned_at, bool has_extends, int64 extends)
{
	StringInfoData buf;
	const HeadSeal *head = &hr->seals[hr->nseals - 1];

	initStringInfo(&buf);
	AppendBinding(&buf, hr->iss, hr->jti, hr->hash);
	appendStringInfoString(&buf, ",\"node\":");
	AppendJsonString(&buf, hr->iss);
	appendStringInfo(&buf, ",\"seal\":" INT64_FORMAT ",\"head\":", head->id);
	AppendJsonString(&buf, head->hash);
	if (has_extends)
		appendStringInfo(&buf, ",\"extends\":" INT64_FORMAT, extends);
	else
		appendStringInfoString(&buf, ",\"extends\":null");
	appendStringInfoString(&buf, ",\"cosigned_at\":");
	AppendJsonString(&buf, cosigned_at);
	appendStringInfoChar(&buf, '}');
	return (char *) pg_server_to_any(buf.data, buf.len, PG_UTF8);
}

/*
 * BuildWitnessError - a refusal of a request to cosign, with the head the
 * witness cosigned last ("witnessed") when it has one
 */
char *
BuildWitnessError(const HeadRequest *hr, const char *code, const char *message,
				  bool has_witnessed, int64 witnessed_seal, const char *witnessed_head)
{
	StringInfoData buf;

	initStringInfo(&buf);
	AppendBinding(&buf, hr->iss, hr->jti, hr->hash);
	if (has_witnessed)
	{
		appendStringInfo(&buf, ",\"witnessed\":{\"seal\":" INT64_FORMAT ",\"head\":", witnessed_seal);
		AppendJsonString(&buf, witnessed_head);
		appendStringInfoChar(&buf, '}');
	}
	appendStringInfoString(&buf, ",\"error\":{\"code\":");
	AppendJsonString(&buf, code);
	appendStringInfoString(&buf, ",\"message\":");
	AppendJsonString(&buf, message);
	appendStringInfoString(&buf, "}}");
	return (char *) pg_server_to_any(buf.data, buf.len, PG_UTF8);
}

/*
 * CheckCosignature - verify a witness's cosignature of the head this node
 * sent (seal_id, head) in the request of jti and req_hash; returns the
 * payload.  Raises an ERROR naming the first check that failed.
 */
Jsonb *
CheckCosignature(const char *body, size_t len, const char *witness, const char *jti,
				 const char *req_hash, int64 seal_id, const char *head)
{
	const char *what = "cosignature";
	const char *signer;
	size_t		plen;
	char	   *payload;
	Jsonb	   *jb;
	char	   *iss;
	char	   *s;
	bool		present;
	const char *self = GetNodeState()->member_id;

	payload = JwsVerifyCompact(body, len, NULL, JWS_TYP_COSIGNATURE, &signer, &plen);
	jb = PayloadJsonb(payload, plen, what);
	iss = MemberClaim(jb, "iss", what);
	if (signer == NULL || strcmp(iss, signer) != 0 || strcmp(iss, witness) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_MEMBER_MISMATCH),
				 errmsg("cosignature is not from the witness that was asked"),
				 errdetail("The request went to \"%s\"; the cosignature claims iss \"%s\" and is signed by \"%s\".",
						   witness, iss, signer ? signer : "(unknown)")));
	if ((s = StringClaim(jb, "aud", true, what)) == NULL || strcmp(s, self) != 0 ||
		(s = StringClaim(jb, "jti", true, what)) == NULL || pg_strcasecmp(s, jti) != 0 ||
		(s = StringClaim(jb, "req", true, what)) == NULL || strcmp(s, req_hash) != 0 ||
		(s = StringClaim(jb, "node", true, what)) == NULL || strcmp(s, self) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_WRONG_AUDIENCE),
				 errmsg("cosignature is not bound to this request"),
				 errdetail("Expected aud and node \"%s\", jti \"%s\", req \"%s\".", self, jti, req_hash)));
	if (Int64Claim(jb, "seal", &present, what) != seal_id || !present ||
		strcmp(StringClaim(jb, "head", true, what), head) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_INVALID_RESPONSE),
				 errmsg("cosignature is not of the head that was sent"),
				 errdetail("The head sent was seal " INT64_FORMAT " with hash %s.", seal_id, head)));
	CheckTimes(TimeClaim(jb, "iat", what), 0, false);
	(void) StringClaim(jb, "cosigned_at", true, what);
	return jb;
}
