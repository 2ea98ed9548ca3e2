/*-------------------------------------------------------------------------
 *
 * member_id.c
 *	  The interop.member_id type: INSTANCE/CLASS/CODE[/SUBSYSTEM].
 *
 * A member id names an agency (three parts) or one of its systems (four
 * parts), in the shape X-Road uses.  Input is validated and canonicalised:
 * the instance and class are codes and are upper-cased; the member code and
 * subsystem keep their case.  The stored value is the canonical text, so
 * equality is byte equality and hashing is hashing of bytes.  Ordering is
 * part by part, which we get by comparing bytes with '/' ranked below every
 * character a part may contain.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "access/hash.h"
#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "utils/builtins.h"

/* limits of each part, in bytes */
static const struct
{
	const char *name;
	int			maxlen;
	bool		upper;			/* canonical form is upper case */
	bool		dots;			/* may contain '.' and '_' */
}			member_parts[4] =
{
	{"instance", 32, true, false},
	{"member class", 16, true, false},
	{"member code", 64, false, true},
	{"subsystem", 64, false, true},
};

/* largest canonical member id: four parts and three slashes */
#define MEMBER_ID_MAXLEN (32 + 16 + 64 + 64 + 3)

/*
 * MemberIdParse - validate str; on success set *canonical, on failure set
 * *problem to a sentence for errdetail and return false.
 */
bool
MemberIdParse(const char *str, char **canonical, char **problem)
{
	StringInfoData out;
	const char *p = str;
	const char *end;
	int			part = 0;

	/* surrounding white space is ignored, as other types do */
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	end = p + strlen(p);
	while (end > p && (end[-1] == ' ' || end[-1] == '\t' ||
					   end[-1] == '\n' || end[-1] == '\r'))
		end--;

	if (p == end)
	{
		*problem = pstrdup("A member id has the form INSTANCE/CLASS/CODE or INSTANCE/CLASS/CODE/SUBSYSTEM; the input is empty.");
		return false;
	}

	initStringInfo(&out);
	for (;;)
	{
		const char *start = p;
		int			len;

		if (part >= 4)
		{
			*problem = pstrdup("A member id has at most four parts: INSTANCE/CLASS/CODE/SUBSYSTEM.");
			return false;
		}
		while (p < end && *p != '/')
		{
			unsigned char c = (unsigned char) *p;
			bool		ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
				(c >= '0' && c <= '9') || c == '-' ||
				(member_parts[part].dots && (c == '.' || c == '_'));

			if (!ok)
			{
				if (c < 0x20 || c >= 0x7f)
					*problem = psprintf("The %s contains the byte 0x%02x; only letters, digits and %s are allowed.",
										member_parts[part].name, c,
										member_parts[part].dots ? "\"-\", \".\", \"_\"" : "\"-\"");
				else
					*problem = psprintf("The %s contains \"%c\"; only letters, digits and %s are allowed.",
										member_parts[part].name, c,
										member_parts[part].dots ? "\"-\", \".\", \"_\"" : "\"-\"");
				return false;
			}
			p++;
		}
		len = p - start;
		if (len == 0)
		{
			*problem = psprintf("The %s is empty.", member_parts[part].name);
			return false;
		}
		if (len > member_parts[part].maxlen)
		{
			*problem = psprintf("The %s is %d characters long; at most %d are allowed.",
								member_parts[part].name, len,
								member_parts[part].maxlen);
			return false;
		}
		if (part > 0)
			appendStringInfoChar(&out, '/');
		for (int i = 0; i < len; i++)
			appendStringInfoChar(&out, member_parts[part].upper ?
								 pg_ascii_toupper(start[i]) : start[i]);
		part++;
		if (p == end)
			break;
		p++;					/* skip '/' */
		if (p == end)
		{
			*problem = psprintf("The %s is empty.", member_parts[part < 4 ? part : 3].name);
			return false;
		}
	}

	if (part < 3)
	{
		*problem = psprintf("A member id needs at least three parts, INSTANCE/CLASS/CODE; the input has %d.", part);
		return false;
	}
	*canonical = out.data;
	return true;
}

/* MemberIdFromCString - parse or raise the error of the type's input */
static text *
MemberIdFromCString(const char *str)
{
	char	   *canonical;
	char	   *problem;

	if (strlen(str) > MEMBER_ID_MAXLEN + 64)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid member id: input is too long"),
				 errdetail("A member id has at most %d characters; the input has %zu.",
						   MEMBER_ID_MAXLEN, strlen(str))));
	if (!MemberIdParse(str, &canonical, &problem))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid member id: \"%s\"", str),
				 errdetail("%s", problem),
				 errhint("Example: MN/GOV/1234567/population.")));
	return cstring_to_text(canonical);
}

PG_FUNCTION_INFO_V1(member_id_in);
/* member_id_in - text input */
Datum
member_id_in(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(MemberIdFromCString(PG_GETARG_CSTRING(0)));
}

PG_FUNCTION_INFO_V1(member_id_out);
/* member_id_out - canonical text output */
Datum
member_id_out(PG_FUNCTION_ARGS)
{
	PG_RETURN_CSTRING(text_to_cstring(PG_GETARG_TEXT_PP(0)));
}

PG_FUNCTION_INFO_V1(member_id_recv);
/* member_id_recv - binary input: the text form, validated again */
Datum
member_id_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int			nbytes;
	char	   *str = pq_getmsgtext(buf, buf->len - buf->cursor, &nbytes);

	PG_RETURN_TEXT_P(MemberIdFromCString(str));
}

PG_FUNCTION_INFO_V1(member_id_send);
/* member_id_send - binary output: the canonical text */
Datum
member_id_send(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendtext(&buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* MemberIdCmp - part-wise order: '/' sorts before any other character */
static int
MemberIdCmp(text *a, text *b)
{
	const unsigned char *pa = (const unsigned char *) VARDATA_ANY(a);
	const unsigned char *pb = (const unsigned char *) VARDATA_ANY(b);
	int			la = VARSIZE_ANY_EXHDR(a);
	int			lb = VARSIZE_ANY_EXHDR(b);
	int			n = Min(la, lb);

	for (int i = 0; i < n; i++)
	{
		int			ca = pa[i] == '/' ? 0 : pa[i];
		int			cb = pb[i] == '/' ? 0 : pb[i];

		if (ca != cb)
			return ca < cb ? -1 : 1;
	}
	return (la > lb) - (la < lb);
}

#define MEMBER_ID_CMP_FN(name, expr) \
PG_FUNCTION_INFO_V1(name); \
Datum \
name(PG_FUNCTION_ARGS) \
{ \
	text	   *a = PG_GETARG_TEXT_PP(0); \
	text	   *b = PG_GETARG_TEXT_PP(1); \
	int			c = MemberIdCmp(a, b); \
	PG_FREE_IF_COPY(a, 0); \
	PG_FREE_IF_COPY(b, 1); \
	expr; \
}

MEMBER_ID_CMP_FN(member_id_cmp, PG_RETURN_INT32(c))
MEMBER_ID_CMP_FN(member_id_eq, PG_RETURN_BOOL(c == 0))
MEMBER_ID_CMP_FN(member_id_ne, PG_RETURN_BOOL(c != 0))
MEMBER_ID_CMP_FN(member_id_lt, PG_RETURN_BOOL(c < 0))
MEMBER_ID_CMP_FN(member_id_le, PG_RETURN_BOOL(c <= 0))
MEMBER_ID_CMP_FN(member_id_gt, PG_RETURN_BOOL(c > 0))
MEMBER_ID_CMP_FN(member_id_ge, PG_RETURN_BOOL(c >= 0))

PG_FUNCTION_INFO_V1(member_id_hash);
/* member_id_hash - hash of the canonical bytes */
Datum
member_id_hash(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);

	return hash_any((const unsigned char *) VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

PG_FUNCTION_INFO_V1(member_id_hash_extended);
/* member_id_hash_extended - seeded 64-bit hash of the canonical bytes */
Datum
member_id_hash_extended(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);

	return hash_any_extended((const unsigned char *) VARDATA_ANY(t),
							 VARSIZE_ANY_EXHDR(t), PG_GETARG_INT64(1));
}

/* MemberIdPart - the n-th '/'-separated part of a member id, or NULL */
static text *
MemberIdPart(text *t, int n)
{
	const char *p = VARDATA_ANY(t);
	const char *end = p + VARSIZE_ANY_EXHDR(t);

	for (int i = 0; i < n; i++)
	{
		p = memchr(p, '/', end - p);
		if (p == NULL)
			return NULL;
		p++;
	}
	{
		const char *q = memchr(p, '/', end - p);

		return cstring_to_text_with_len(p, (q ? q : end) - p);
	}
}

#define MEMBER_ID_PART_FN(name, n) \
PG_FUNCTION_INFO_V1(name); \
Datum \
name(PG_FUNCTION_ARGS) \
{ \
	text	   *part = MemberIdPart(PG_GETARG_TEXT_PP(0), n); \
	if (part == NULL) \
		PG_RETURN_NULL(); \
	PG_RETURN_TEXT_P(part); \
}

MEMBER_ID_PART_FN(member_id_instance, 0)
MEMBER_ID_PART_FN(member_id_class, 1)
MEMBER_ID_PART_FN(member_id_code, 2)
MEMBER_ID_PART_FN(member_id_subsystem, 3)
