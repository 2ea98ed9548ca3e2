/*-------------------------------------------------------------------------
 *
 * jws.c
 *	  JSON Web Signatures (RFC 7515, compact serialization): the interop.jws
 *	  type, jws_header(), jws_payload(), sign() and verify().
 *
 * sign() puts the node's chain in the protected header ("x5c", base64 DER,
 * leaf first) with its thumbprint ("x5t#S256"), so any receiver with the
 * federation's CA can check the signer without a key exchange.  The header
 * is the same for every signature of a node and is encoded once per backend.
 *
 * verify() follows docs/protocol.md for the parts that concern a signature: the
 * structure, an allowed "alg" (ES256, EdDSA, PS256, RS256; never "none" nor
 * an HMAC), the "x5c" chain to a trust anchor with dates and revocation
 * (x509.c, cached per signer chain), "alg" consistent with the key type, and
 * finally the signature.  Claims such as "exp" belong to the protocol.
 *
 * JSON on the wire is parsed with jansson, whose allocator is palloc (set in
 * _PG_init), so an ERROR never leaks a parsed document.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

/*
 * fmgrprotos.h declares SQL's json_object(); jansson has its own.  The
 * postgres binary exports its symbol, which would win at run time, so this
 * file never calls jansson's json_object(): objects come from json_pack().
 */
#define json_object pg_sql_json_object
#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#undef json_object

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

/* the protected header is small; a bigger one is an attack or an accident */
#define JWS_MAX_HEADER 65536
/* a certificate chain longer than this is not one a federation issues */
#define JWS_MAX_CHAIN 10

/* JwsAlgFromName - the algorithm named by a JWS "alg", or JWS_ALG_INVALID */
JwsAlg
JwsAlgFromName(const char *name)
{
	if (strcmp(name, "ES256") == 0)
		return JWS_ALG_ES256;
	if (strcmp(name, "EdDSA") == 0)
		return JWS_ALG_EDDSA;
	if (strcmp(name, "PS256") == 0)
		return JWS_ALG_PS256;
	if (strcmp(name, "RS256") == 0)
		return JWS_ALG_RS256;
	return JWS_ALG_INVALID;
}

/* JwsAlgName - the JWS name of alg */
const char *
JwsAlgName(JwsAlg alg)
{
	switch (alg)
	{
		case JWS_ALG_ES256:
			return "ES256";
		case JWS_ALG_EDDSA:
			return "EdDSA";
		case JWS_ALG_PS256:
			return "PS256";
		case JWS_ALG_RS256:
			return "RS256";
		case JWS_ALG_INVALID:
			break;
	}
	return "invalid";
}

/* KeyTypeName - a short description of a key for error messages */
static const char *
KeyTypeName(EVP_PKEY *pkey)
{
	char		group[64];

	if (EVP_PKEY_is_a(pkey, "EC"))
	{
		if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), NULL))
			return psprintf("an EC key on curve %s", group);
		return "an EC key";
	}
	if (EVP_PKEY_is_a(pkey, "ED25519"))
		return "an Ed25519 key";
	if (EVP_PKEY_is_a(pkey, "RSA"))
		return psprintf("a %d-bit RSA key", EVP_PKEY_get_bits(pkey));
	return psprintf("a key of type %s", EVP_PKEY_get0_type_name(pkey));
}

/*
 * JwsAlgCheckKey - refuse a key that alg does not use (an "alg" chosen by an
 * attacker must never make us use a key in another way than its type says).
 */
void
JwsAlgCheckKey(JwsAlg alg, EVP_PKEY *pkey)
{
	bool		ok = false;
	char		group[64];

	switch (alg)
	{
		case JWS_ALG_ES256:
			ok = EVP_PKEY_is_a(pkey, "EC") &&
				EVP_PKEY_get_group_name(pkey, group, sizeof(group), NULL) &&
				strcmp(group, "prime256v1") == 0;
			break;
		case JWS_ALG_EDDSA:
			ok = EVP_PKEY_is_a(pkey, "ED25519");
			break;
		case JWS_ALG_PS256:
		case JWS_ALG_RS256:
			ok = EVP_PKEY_is_a(pkey, "RSA") && EVP_PKEY_get_bits(pkey) >= 2048;
			break;
		case JWS_ALG_INVALID:
			break;
	}
	ERR_clear_error();
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_ALGORITHM_REFUSED),
				 errmsg("algorithm %s does not match the key", JwsAlgName(alg)),
				 errdetail("The key is %s.", KeyTypeName(pkey)),
				 errhint("ES256 needs a P-256 key, EdDSA an Ed25519 key, PS256 and RS256 an RSA key of at least 2048 bits.")));
}

/* a compact JWS split into its parts; pointers into the input */
typedef struct JwsParts
{
	const char *header;
	size_t		header_len;
	const char *payload;
	size_t		payload_len;
	const char *signature;
	size_t		signature_len;
} JwsParts;

/* JwsSplit - split and check the alphabet; NULL or a sentence saying what is wrong */
static char *
JwsSplit(const char *s, size_t len, JwsParts *parts)
{
	const char *dot1 = memchr(s, '.', len);
	const char *dot2;
	const char *end = s + len;

	if (dot1 == NULL)
		return pstrdup("A compact JWS has three parts separated by \".\"; the input has none.");
	dot2 = memchr(dot1 + 1, '.', end - dot1 - 1);
	if (dot2 == NULL)
		return pstrdup("A compact JWS has three parts separated by \".\"; the input has two.");
	if (memchr(dot2 + 1, '.', end - dot2 - 1) != NULL)
		return pstrdup("A compact JWS has three parts separated by \".\"; the input has more.");

	parts->header = s;
	parts->header_len = dot1 - s;
	parts->payload = dot1 + 1;
	parts->payload_len = dot2 - dot1 - 1;
	parts->signature = dot2 + 1;
	parts->signature_len = end - dot2 - 1;

	if (parts->header_len == 0)
		return pstrdup("The protected header is empty.");
	if (parts->header_len > JWS_MAX_HEADER)
		return psprintf("The protected header is %zu bytes long; at most %d are accepted.",
						parts->header_len, JWS_MAX_HEADER);
	if (parts->payload_len == 0)
		return pstrdup("The payload is empty (detached payloads are not supported).");
	for (const char *p = s; p < end; p++)
	{
		if (*p != '.' && Base64UrlValue((unsigned char) *p) < 0)
		{
			const char *part = p < dot1 ? "protected header" :
				p < dot2 ? "payload" : "signature";

			if (*p == '=')
				return psprintf("The %s is padded with \"=\"; JWS uses unpadded base64url.", part);
			if ((unsigned char) *p < 0x20 || (unsigned char) *p >= 0x7f)
				return psprintf("The %s contains the byte 0x%02x, which is not base64url.",
								part, (unsigned char) *p);
			return psprintf("The %s contains \"%c\", which is not base64url.", part, *p);
		}
	}
	if (parts->header_len % 4 == 1 || parts->payload_len % 4 == 1 ||
		parts->signature_len % 4 == 1)
		return pstrdup("A part has a length that base64url cannot produce (it was truncated).");
	return NULL;
}

/*
 * JwsDecodeHeader - decode and parse the protected header; sets *problem and
 * returns NULL when it is not a JSON object with a string "alg".
 */
static json_t *
JwsDecodeHeader(const JwsParts *parts, char **problem)
{
	size_t		len;
	unsigned char *raw = Base64UrlDecode(parts->header, parts->header_len, &len);
	json_t	   *h;
	json_error_t jerr;

	if (raw == NULL)
	{
		*problem = pstrdup("The protected header is not valid base64url.");
		return NULL;
	}
	h = json_loadb((const char *) raw, len, JSON_REJECT_DUPLICATES, &jerr);
	if (h == NULL)
	{
		*problem = psprintf("The protected header is not valid JSON: %s.", jerr.text);
		return NULL;
	}
	if (!json_is_object(h))
	{
		json_decref(h);
		*problem = pstrdup("The protected header is not a JSON object.");
		return NULL;
	}
	if (!json_is_string(json_object_get(h, "alg")))
	{
		json_decref(h);
		*problem = pstrdup("The protected header has no \"alg\" string.");
		return NULL;
	}
	return h;
}

/* JwsCheck - validate a compact JWS as the type's input does, or raise */
static void
JwsCheck(const char *s, size_t len, JwsParts *parts)
{
	char	   *problem;
	json_t	   *h;

	problem = JwsSplit(s, len, parts);
	if (problem == NULL)
	{
		h = JwsDecodeHeader(parts, &problem);
		if (h != NULL)
			json_decref(h);
	}
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid JWS"),
				 errdetail("%s", problem),
				 errhint("A JWS in compact serialization is BASE64URL(header).BASE64URL(payload).BASE64URL(signature).")));
}

PG_FUNCTION_INFO_V1(jws_in);
/* jws_in - text input, validated */
Datum
jws_in(PG_FUNCTION_ARGS)
{
	char	   *s = PG_GETARG_CSTRING(0);
	size_t		len = strlen(s);
	JwsParts	parts;

	/* surrounding white space is ignored, as other types do */
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\n' ||
					   s[len - 1] == '\r' || s[len - 1] == '\t'))
		len--;
	while (len > 0 && (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t'))
		s++, len--;
	JwsCheck(s, len, &parts);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(s, len));
}

PG_FUNCTION_INFO_V1(jws_out);
/* jws_out - the compact serialization */
Datum
jws_out(PG_FUNCTION_ARGS)
{
	PG_RETURN_CSTRING(text_to_cstring(PG_GETARG_TEXT_PP(0)));
}

PG_FUNCTION_INFO_V1(jws_recv);
/* jws_recv - binary input: the compact serialization, validated */
Datum
jws_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int			nbytes;
	char	   *s = pq_getmsgtext(buf, buf->len - buf->cursor, &nbytes);
	JwsParts	parts;

	JwsCheck(s, strlen(s), &parts);
	PG_RETURN_TEXT_P(cstring_to_text(s));
}

PG_FUNCTION_INFO_V1(jws_send);
/* jws_send - binary output: the compact serialization */
Datum
jws_send(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendtext(&buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* JsonbFromUtf8 - parse UTF-8 JSON bytes into jsonb; what names the part */
static Datum
JsonbFromUtf8(const unsigned char *raw, size_t len, const char *what)
{
	char	   *s;

	if (memchr(raw, '\0', len) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid JWS: the %s contains a NUL byte", what)));
	/* validates UTF-8 and converts to the database encoding */
	s = pg_any_to_server((const char *) raw, len, PG_UTF8);
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(s));
}

PG_FUNCTION_INFO_V1(jws_header);
/* jws_header - the protected header as jsonb (not verified) */
Datum
jws_header(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	JwsParts	parts;
	size_t		len;
	unsigned char *raw;

	JwsCheck(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), &parts);
	raw = Base64UrlDecode(parts.header, parts.header_len, &len);
	PG_RETURN_DATUM(JsonbFromUtf8(raw, len, "protected header"));
}

PG_FUNCTION_INFO_V1(jws_payload);
/* jws_payload - the payload as jsonb (not verified) */
Datum
jws_payload(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	JwsParts	parts;
	size_t		len;
	unsigned char *raw;

	JwsCheck(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), &parts);
	raw = Base64UrlDecode(parts.payload, parts.payload_len, &len);
	if (raw == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid JWS: the payload is not valid base64url")));
	PG_RETURN_DATUM(JsonbFromUtf8(raw, len, "payload"));
}

/* InitDigestCtx - a new EVP_MD_CTX set up to sign or verify with alg */
static EVP_MD_CTX *
InitDigestCtx(JwsAlg alg, EVP_PKEY *key, bool sign)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	const EVP_MD *digest = alg == JWS_ALG_EDDSA ? NULL : EVP_sha256();
	int			ok;

	if (md == NULL)
		return NULL;
	ok = sign ? EVP_DigestSignInit(md, &pctx, digest, NULL, key) :
		EVP_DigestVerifyInit(md, &pctx, digest, NULL, key);
	if (ok == 1 && alg == JWS_ALG_PS256)
		ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
			EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1 &&
			EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) == 1;
	else if (ok == 1 && alg == JWS_ALG_RS256)
		ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
	if (ok != 1)
	{
		EVP_MD_CTX_free(md);
		return NULL;
	}
	return md;
}

/*
 * Initialising a signing context in OpenSSL 3 looks the algorithms up in the
 * provider store on every call, which costs about as much as an ECDSA
 * signature.  We keep one initialised context per direction for the last key
 * used (holding a reference, so the key cannot be freed and its address
 * reused) and give each call a copy.
 */
typedef struct CtxTemplate
{
	EVP_PKEY   *key;
	JwsAlg		alg;
	EVP_MD_CTX *md;
} CtxTemplate;

static CtxTemplate ctx_templates[2];	/* [0] verify, [1] sign */

/* NewDigestCtx - an EVP_MD_CTX set up to sign or verify with alg; NULL on failure */
static EVP_MD_CTX *
NewDigestCtx(JwsAlg alg, EVP_PKEY *key, bool sign)
{
	CtxTemplate *t = &ctx_templates[sign ? 1 : 0];
	EVP_MD_CTX *md;

	if (t->md == NULL || t->key != key || t->alg != alg)
	{
		EVP_MD_CTX *fresh = InitDigestCtx(alg, key, sign);

		if (fresh == NULL)
			return NULL;
		EVP_MD_CTX_free(t->md);
		EVP_PKEY_free(t->key);
		EVP_PKEY_up_ref(key);
		t->key = key;
		t->alg = alg;
		t->md = fresh;
	}
	md = EVP_MD_CTX_new();
	if (md != NULL && EVP_MD_CTX_copy_ex(md, t->md) == 1)
		return md;
	/* some providers cannot copy a context: initialise one */
	EVP_MD_CTX_free(md);
	ERR_clear_error();
	return InitDigestCtx(alg, key, sign);
}

/* SignBytes - the JWS signature of input with key; palloc'd */
static unsigned char *
SignBytes(JwsAlg alg, EVP_PKEY *key, const char *input, size_t len, size_t *siglen)
{
	EVP_MD_CTX *md;
	unsigned char *sig;
	size_t		n = 0;

	ERR_clear_error();
	md = NewDigestCtx(alg, key, true);
	if (md == NULL || EVP_DigestSign(md, NULL, &n, (const unsigned char *) input, len) != 1)
	{
		EVP_MD_CTX_free(md);
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not sign", NULL);
	}
	sig = palloc(n);
	if (EVP_DigestSign(md, sig, &n, (const unsigned char *) input, len) != 1)
	{
		EVP_MD_CTX_free(md);
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not sign", NULL);
	}
	EVP_MD_CTX_free(md);

	if (alg == JWS_ALG_ES256)
	{
		/* JWS carries R || S, 32 bytes each, not DER (RFC 7518 §3.4) */
		const unsigned char *p = sig;
		ECDSA_SIG  *es = d2i_ECDSA_SIG(NULL, &p, n);
		unsigned char *raw = palloc(64);

		if (es == NULL ||
			BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32) != 32 ||
			BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32) != 32)
		{
			ECDSA_SIG_free(es);
			OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not encode an ECDSA signature", NULL);
		}
		ECDSA_SIG_free(es);
		pfree(sig);
		sig = raw;
		n = 64;
	}
	*siglen = n;
	return sig;
}

/* VerifyBytes - does sig sign input under key with alg? */
static bool
VerifyBytes(JwsAlg alg, EVP_PKEY *key, const char *input, size_t len,
			const unsigned char *sig, size_t siglen)
{
	EVP_MD_CTX *md;
	unsigned char *der = NULL;
	int			derlen = 0;
	int			ok;

	ERR_clear_error();
	if (alg == JWS_ALG_ES256)
	{
		ECDSA_SIG  *es;
		BIGNUM	   *r,
				   *s;

		if (siglen != 64)
			return false;
		es = ECDSA_SIG_new();
		r = BN_bin2bn(sig, 32, NULL);
		s = BN_bin2bn(sig + 32, 32, NULL);
		if (es == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s))
		{
			BN_free(r);
			BN_free(s);
			ECDSA_SIG_free(es);
			OpenSSLError(ERRCODE_OUT_OF_MEMORY, "out of memory", NULL);
		}
		derlen = i2d_ECDSA_SIG(es, &der);
		ECDSA_SIG_free(es);
		if (derlen <= 0)
			OpenSSLError(ERRCODE_OUT_OF_MEMORY, "out of memory", NULL);
		sig = der;
		siglen = derlen;
	}
	md = NewDigestCtx(alg, key, false);
	if (md == NULL)
	{
		OPENSSL_free(der);
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not set up signature verification", NULL);
	}
	ok = EVP_DigestVerify(md, sig, siglen, (const unsigned char *) input, len);
	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	ERR_clear_error();
	return ok == 1;
}

/* the "typ" of each kind of JWS (JwsTyp) */
static const char *const typ_names[JWS_TYP_COUNT] = {
	"JOSE", "interop-request", "interop-response", "interop-catalog", "interop-seal",
	"interop-head", "interop-cosignature"
};

/* JwsTypName - the header "typ" of a kind of JWS */
const char *
JwsTypName(JwsTyp typ)
{
	return typ >= 0 && typ < JWS_TYP_COUNT ? typ_names[typ] : "(any)";
}

/* NodeHeader - base64url of this node's protected header of a typ, built once */
static const char *
NodeHeader(NodeState *st, JwsTyp typ)
{
	json_t	   *h;
	char	   *json;

	if (st->header_b64[typ] != NULL)
		return st->header_b64[typ];

	h = json_pack("{s:s, s:s}", "alg", JwsAlgName(st->alg), "typ", typ_names[typ]);
	if (h == NULL)
		elog(ERROR, "could not build the protected header");
	if (st->chain != NULL)
	{
		json_t	   *x5c = json_array();
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int mdlen;

		for (int i = 0; i < sk_X509_num(st->chain); i++)
		{
			unsigned char *der = NULL;
			int			len = i2d_X509(sk_X509_value(st->chain, i), &der);

			if (len <= 0)
				OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not encode the node certificate", NULL);
			json_array_append_new(x5c, json_string(Base64Encode(der, len)));
			OPENSSL_free(der);
		}
		json_object_set_new(h, "x5c", x5c);
		if (!X509_digest(sk_X509_value(st->chain, 0), EVP_sha256(), md, &mdlen))
			OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not hash the node certificate", NULL);
		json_object_set_new(h, "x5t#S256", json_string(Base64UrlEncode(md, mdlen)));
	}
	json = json_dumps(h, JSON_COMPACT);
	json_decref(h);
	if (json == NULL)
		elog(ERROR, "could not serialise the protected header");
	st->header_b64[typ] = MemoryContextStrdup(TopMemoryContext,
											  Base64UrlEncode((unsigned char *) json, strlen(json)));
	pfree(json);
	return st->header_b64[typ];
}

/*
 * JwsSignJson - sign len bytes of UTF-8 JSON with the node key, as a JWS of
 * the given typ; returns the compact JWS, palloc'd.  The protocol, the
 * gateway, the seals and sign() sign through here.
 */
char *
JwsSignJson(const char *json, size_t len, JwsTyp typ)
{
	NodeState  *st = GetNodeState();
	const char *header = NodeHeader(st, typ);
	StringInfoData out;
	size_t		input_len;
	unsigned char *sig;
	size_t		siglen;

	initStringInfo(&out);
	appendStringInfoString(&out, header);
	appendStringInfoChar(&out, '.');
	appendStringInfoString(&out, Base64UrlEncode((const unsigned char *) json, len));
	input_len = out.len;
	sig = SignBytes(st->alg, st->key, out.data, input_len, &siglen);
	appendStringInfoChar(&out, '.');
	appendStringInfoString(&out, Base64UrlEncode(sig, siglen));
	pfree(sig);
	return out.data;
}

/* JwsX5cLeaf - the leaf certificate of a JWS's "x5c" header, unverified, or NULL */
X509 *
JwsX5cLeaf(const char *jws)
{
	const char *dot = strchr(jws, '.');
	size_t		len;
	char	   *raw = dot ? (char *) Base64UrlDecode(jws, dot - jws, &len) : NULL;
	json_t	   *h;
	json_t	   *x5c;
	X509	   *cert = NULL;

	if (raw == NULL || (h = json_loadb(raw, len, 0, NULL)) == NULL)
		return NULL;
	x5c = json_object_get(h, "x5c");
	if (json_is_array(x5c) && json_array_size(x5c) > 0 && json_is_string(json_array_get(x5c, 0)))
	{
		size_t		dlen;
		unsigned char *der = Base64Decode(json_string_value(json_array_get(x5c, 0)),
										  json_string_length(json_array_get(x5c, 0)), &dlen);
		const unsigned char *p = der;

		if (der != NULL)
			cert = d2i_X509(NULL, &p, (long) dlen);
	}
	json_decref(h);
	return cert;
}

PG_FUNCTION_INFO_V1(interop_sign);
/* interop_sign - sign a jsonb payload with the node key */
Datum
interop_sign(PG_FUNCTION_ARGS)
{
	Jsonb	   *payload = PG_GETARG_JSONB_P(0);
	char	   *json = JsonbToCString(NULL, &payload->root, VARSIZE(payload));
	char	   *jws;

	/* the payload on the wire is UTF-8 whatever the database encoding */
	json = (char *) pg_server_to_any(json, strlen(json), PG_UTF8);
	jws = JwsSignJson(json, strlen(json), JWS_TYP_USER);
	PG_RETURN_TEXT_P(cstring_to_text(jws));
}

/*
 * A per-backend cache of protected headers already found acceptable: the
 * exact header bytes map to their algorithm and to the chain cache key of
 * their "x5c".  A repeated signer then skips decoding and parsing a header
 * of a few kilobytes.  The chain itself is looked up again in x509.c's
 * cache on every use, so trust changes and certificate dates still apply.
 */
#define HEADER_CACHE_SLOTS 64

typedef struct HeaderSlot
{
	char	   *header;			/* base64url header bytes, TopMemoryContext */
	size_t		len;
	JwsAlg		alg;
	int			typ;			/* JwsTyp of its "typ"; -1 for none of ours */
	unsigned char digest[32];	/* chain cache key */
} HeaderSlot;

static HeaderSlot header_cache[HEADER_CACHE_SLOTS];

/* HeaderSlotFor - the slot a header maps to */
static HeaderSlot *
HeaderSlotFor(const JwsParts *parts)
{
	uint32		h = hash_bytes((const unsigned char *) parts->header, parts->header_len);

	return &header_cache[h % HEADER_CACHE_SLOTS];
}

/* HeaderCacheLookup - the cached verdict on exactly this header, or NULL */
static HeaderSlot *
HeaderCacheLookup(const JwsParts *parts)
{
	HeaderSlot *slot = HeaderSlotFor(parts);

	if (slot->header != NULL && slot->len == parts->header_len &&
		memcmp(slot->header, parts->header, parts->header_len) == 0)
		return slot;
	return NULL;
}

/* HeaderCacheStore - remember an acceptable header */
static void
HeaderCacheStore(const JwsParts *parts, JwsAlg alg, int typ, const unsigned char *digest)
{
	HeaderSlot *slot = HeaderSlotFor(parts);
	char	   *copy = MemoryContextAlloc(TopMemoryContext, parts->header_len);

	memcpy(copy, parts->header, parts->header_len);
	if (slot->header != NULL)
		pfree(slot->header);
	slot->header = copy;
	slot->len = parts->header_len;
	slot->alg = alg;
	slot->typ = typ;
	memcpy(slot->digest, digest, 32);
}

/* TypOf - the JwsTyp a header "typ" names, or -1 */
static int
TypOf(const char *name)
{
	for (int i = 0; name && i < JWS_TYP_COUNT; i++)
		if (strcmp(name, typ_names[i]) == 0)
			return i;
	return -1;
}

/*
 * CheckTyp - the JWS is of the kind expected.  With
 * interop.accept_untyped_messages, a message of a 0.1.0 peer (typ "JOSE",
 * as sign() writes) passes too.
 */
static void
CheckTyp(int found, const char *found_name, JwsTyp expected)
{
	if (expected == JWS_TYP_ANY || found == (int) expected)
		return;
	if (found == JWS_TYP_USER && interop_accept_untyped_messages && expected != JWS_TYP_USER)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INTEROP_INVALID_MESSAGE),
			 errmsg("JWS is not an interop %s", typ_names[expected] + (expected == JWS_TYP_USER ? 0 : 8)),
			 errdetail("Its protected header has typ %s; a %s has typ \"%s\".",
					   found_name ? quote_literal_cstr(found_name) : "(none)",
					   typ_names[expected] + (expected == JWS_TYP_USER ? 0 : 8), typ_names[expected]),
			 found == JWS_TYP_USER ?
			 errhint("A payload signed with interop.sign() is never a protocol message; a peer that still runs interop 0.1.0 needs interop.accept_untyped_messages until it is updated.") : 0));
}

/*
 * JwsCheckHeader - the header steps of verification: "alg" allowed, no
 * "crit", "typ" the kind expected, the key (given, or from an "x5c" chain
 * checked against the trust anchors) and "alg" consistent with it.  Sets
 * *key; returns the algorithm.
 */
static JwsAlg
JwsCheckHeader(const JwsParts *parts, EVP_PKEY *pubkey, JwsTyp expected, EVP_PKEY **key,
			   const char **signer)
{
	const char *typ_name;
	int			typ;
	char	   *problem = NULL;
	json_t	   *h = JwsDecodeHeader(parts, &problem);
	json_t	   *x5c;
	const char *alg_name;
	JwsAlg		alg;
	unsigned char digest[32];

	if (h == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid JWS"),
				 errdetail("%s", problem)));

	/* "alg" allowed */
	alg_name = json_string_value(json_object_get(h, "alg"));
	alg = JwsAlgFromName(alg_name);
	if (alg == JWS_ALG_INVALID)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_ALGORITHM_REFUSED),
				 errmsg("JWS algorithm \"%s\" is refused", alg_name),
				 strcmp(alg_name, "none") == 0 ?
				 errdetail("An unsigned JWS proves nothing.") :
				 strncmp(alg_name, "HS", 2) == 0 ?
				 errdetail("HMAC algorithms need a shared secret; interop verifies public-key signatures only.") :
				 errdetail("The algorithm is not one interop accepts."),
				 errhint("interop accepts ES256, EdDSA, PS256 and RS256.")));
	if (json_object_get(h, "crit") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_ALGORITHM_REFUSED),
				 errmsg("JWS header has critical extensions that interop does not understand"),
				 errdetail("RFC 7515 requires refusing a JWS whose \"crit\" header names unknown extensions.")));

	/* "typ": the kind of message */
	typ_name = json_string_value(json_object_get(h, "typ"));
	typ = TypOf(typ_name);
	CheckTyp(typ, typ_name, expected);

	/* the key: given, or from a trusted chain */
	*key = pubkey;
	*signer = NULL;
	if (pubkey == NULL)
	{
		const char *chain[JWS_MAX_CHAIN];
		size_t		lens[JWS_MAX_CHAIN];
		int			n;

		x5c = json_object_get(h, "x5c");
		if (x5c == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INTEROP_UNTRUSTED_CERTIFICATE),
					 errmsg("JWS has no certificate chain"),
					 errdetail("The protected header has no \"x5c\"."),
					 errhint("Use interop.verify(jws, public_key_pem) for a signer outside the federation's PKI.")));
		n = json_is_array(x5c) ? json_array_size(x5c) : 0;
		if (n == 0 || n > JWS_MAX_CHAIN)
			ereport(ERROR,
					(errcode(ERRCODE_INTEROP_UNTRUSTED_CERTIFICATE),
					 errmsg("invalid x5c header"),
					 errdetail("\"x5c\" must be an array of 1 to %d base64 certificates.", JWS_MAX_CHAIN)));
		for (int i = 0; i < n; i++)
		{
			json_t	   *c = json_array_get(x5c, i);

			if (!json_is_string(c))
				ereport(ERROR,
						(errcode(ERRCODE_INTEROP_UNTRUSTED_CERTIFICATE),
						 errmsg("invalid x5c header"),
						 errdetail("Element %d of \"x5c\" is not a string.", i)));
			chain[i] = json_string_value(c);
			lens[i] = json_string_length(c);
		}
		*key = TrustedSignerKey(chain, lens, n, signer, digest);
	}

	/* "alg" consistent with the key type */
	JwsAlgCheckKey(alg, *key);
	if (pubkey == NULL)
		HeaderCacheStore(parts, alg, typ, digest);
	json_decref(h);
	return alg;
}

/*
 * JwsVerifyCompact - verify a compact JWS of len bytes; with pubkey NULL the
 * key comes from the "x5c" chain, checked against the trust anchors, and
 * *signer is set to the member id its certificate names (NULL with a given
 * key).  Returns the decoded payload bytes (terminated; *payload_len bytes).
 * Every failure is an ERROR whose SQLSTATE says which check failed.
 */
char *
JwsVerifyCompact(const char *s, size_t len, EVP_PKEY *pubkey, JwsTyp typ, const char **signer,
				 size_t *payload_len)
{
	JwsParts	parts;
	JwsAlg		alg = JWS_ALG_INVALID;
	char	   *problem;
	unsigned char *sig;
	size_t		siglen;
	unsigned char *raw;
	EVP_PKEY   *key = NULL;

	/* structure */
	problem = JwsSplit(s, len, &parts);
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid JWS"),
				 errdetail("%s", problem)));

	/* a header accepted before, whose chain is still trusted and valid */
	*signer = NULL;
	if (pubkey == NULL)
	{
		HeaderSlot *slot = HeaderCacheLookup(&parts);

		if (slot != NULL && (key = CachedSignerKey(slot->digest, signer)) != NULL)
		{
			CheckTyp(slot->typ, slot->typ >= 0 ? typ_names[slot->typ] : "(another)", typ);
			alg = slot->alg;
		}
	}

	if (key == NULL)
		alg = JwsCheckHeader(&parts, pubkey, typ, &key, signer);

	/* the signature */
	sig = Base64UrlDecode(parts.signature, parts.signature_len, &siglen);
	if (sig == NULL || siglen == 0 ||
		!VerifyBytes(alg, key, s, parts.payload + parts.payload_len - s, sig, siglen))
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_INVALID_SIGNATURE),
				 errmsg("JWS signature is not valid"),
				 errdetail("The signature does not match the protected header and payload under the signer's %s key.",
						   JwsAlgName(alg))));

	raw = Base64UrlDecode(parts.payload, parts.payload_len, payload_len);
	if (raw == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid JWS: the payload is not valid base64url")));
	return (char *) raw;
}

/* JwsHeaderTyp - the "typ" of a JWS's protected header, or NULL (not verified) */
char *
JwsHeaderTyp(const char *jws)
{
	JwsParts	parts;
	char	   *problem;
	json_t	   *h;
	char	   *typ = NULL;

	if (JwsSplit(jws, strlen(jws), &parts) != NULL || (h = JwsDecodeHeader(&parts, &problem)) == NULL)
		return NULL;
	if (json_is_string(json_object_get(h, "typ")))
		typ = pstrdup(json_string_value(json_object_get(h, "typ")));
	json_decref(h);
	return typ;
}

/* JwsVerify - verify a JWS datum; returns the payload as jsonb */
static Datum
JwsVerify(text *t, EVP_PKEY *pubkey)
{
	const char *signer;
	size_t		rawlen;
	char	   *raw = JwsVerifyCompact(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), pubkey, JWS_TYP_ANY, &signer, &rawlen);

	return JsonbFromUtf8((unsigned char *) raw, rawlen, "payload");
}

PG_FUNCTION_INFO_V1(interop_verify);
/* interop_verify - verify against the trust anchors; returns the payload */
Datum
interop_verify(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(JwsVerify(PG_GETARG_TEXT_PP(0), NULL));
}

/* PublicKeyFromPEM - a public key from a PEM public key or certificate; owned by the current context */
EVP_PKEY *
PublicKeyFromPEM(const char *pem)
{
	BIO		   *bio;
	EVP_PKEY   *key = NULL;

	ERR_clear_error();
	bio = BIO_new_mem_buf(pem, -1);
	if (bio == NULL)
		OpenSSLError(ERRCODE_OUT_OF_MEMORY, "out of memory", NULL);
	if (strstr(pem, "-----BEGIN PUBLIC KEY-----") != NULL)
		key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	else if (strstr(pem, "-----BEGIN CERTIFICATE-----") != NULL)
	{
		X509	   *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);

		if (cert != NULL)
		{
			key = X509_get_pubkey(cert);
			X509_free(cert);
		}
	}
	else
	{
		BIO_free(bio);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid public key: no PEM public key found"),
				 errdetail("The input has no \"-----BEGIN PUBLIC KEY-----\" or \"-----BEGIN CERTIFICATE-----\" line."),
				 errhint("Pass the public key in PEM form, as interop.init_node() returns it.")));
	}
	BIO_free(bio);
	if (key == NULL)
		OpenSSLError(ERRCODE_INVALID_TEXT_REPRESENTATION,
					 "invalid public key: the PEM block could not be decoded",
					 "Check that the key was copied whole, including its BEGIN and END lines.");
	OwnEVPKey(key);
	return key;
}

PG_FUNCTION_INFO_V1(interop_verify_with_key);
/* interop_verify_with_key - verify with a given public key (PEM) */
Datum
interop_verify_with_key(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	char	   *pem = text_to_cstring(PG_GETARG_TEXT_PP(1));

	PG_RETURN_DATUM(JwsVerify(t, PublicKeyFromPEM(pem)));
}
