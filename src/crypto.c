/*-------------------------------------------------------------------------
 *
 * crypto.c
 *	  What every file that touches OpenSSL shares: turning OpenSSL's error
 *	  queue into an ERROR, tying OpenSSL objects to memory contexts,
 *	  base64url and base64, and SHA-256.
 *
 * OpenSSL objects are not palloc'd: an ereport() between their creation
 * and their free would leak them.  The Own* helpers register a reset
 * callback on the current memory context that frees the object, so error
 * cleanup frees it too.  OpenSSL keeps a per-thread error queue that
 * PostgreSQL's own TLS code also reads: callers clear it (ERR_clear_error)
 * before a sequence of calls, and OpenSSLError() empties it into the
 * ERROR's detail.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "common/base64.h"
#include "lib/stringinfo.h"
#include "utils/memutils.h"

#include <openssl/err.h>
#include <openssl/evp.h>

/* ---- OpenSSL errors and ownership ---- */

/*
 * OpenSSLErrorText - the reasons OpenSSL queued for this thread, joined, and
 * the queue cleared; NULL when the queue was empty.
 */
char *
OpenSSLErrorText(void)
{
	StringInfoData buf;
	unsigned long e;

	initStringInfo(&buf);
	while ((e = ERR_get_error()) != 0)
	{
		char		one[256];

		ERR_error_string_n(e, one, sizeof(one));
		if (buf.len > 0)
			appendStringInfoString(&buf, "; ");
		appendStringInfoString(&buf, one);
	}
	if (buf.len == 0)
		return NULL;
	return buf.data;
}

/* OpenSSLError - raise an ERROR carrying OpenSSL's reasons in errdetail */
void
OpenSSLError(int sqlstate, const char *msg, const char *hint)
{
	char	   *reason = OpenSSLErrorText();

	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("%s", msg),
			 reason ? errdetail("OpenSSL: %s.", reason) : 0,
			 hint ? errhint("%s", hint) : 0));
	pg_unreachable();
}

/*
 * Ownership of OpenSSL objects by memory contexts.  The object is freed when
 * the context that was current at registration is reset or deleted, which
 * includes error cleanup.
 */
static void
FreeEVPKeyCallback(void *arg)
{
	EVP_PKEY_free((EVP_PKEY *) arg);
}

static void
FreeX509Callback(void *arg)
{
	X509_free((X509 *) arg);
}

static void
FreeX509StackCallback(void *arg)
{
	sk_X509_pop_free((STACK_OF(X509) *) arg, X509_free);
}

static void
OwnWith(void *ptr, MemoryContextCallbackFunction fn)
{
	MemoryContextCallback *cb;

	if (ptr == NULL)
		return;
	cb = MemoryContextAlloc(CurrentMemoryContext, sizeof(MemoryContextCallback));
	cb->func = fn;
	cb->arg = ptr;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
}

/* OwnEVPKey - free pkey with the current memory context */
void
OwnEVPKey(EVP_PKEY *pkey)
{
	OwnWith(pkey, FreeEVPKeyCallback);
}

/* OwnX509 - free cert with the current memory context */
void
OwnX509(X509 *cert)
{
	OwnWith(cert, FreeX509Callback);
}

/* OwnX509Stack - free certs and the stack with the current memory context */
void
OwnX509Stack(STACK_OF(X509) *certs)
{
	OwnWith(certs, FreeX509StackCallback);
}

/* NewMemBio - an empty memory BIO, or an ERROR */
BIO *
NewMemBio(void)
{
	BIO		   *bio = BIO_new(BIO_s_mem());

	if (bio == NULL)
		OpenSSLError(ERRCODE_OUT_OF_MEMORY, "out of memory", NULL);
	return bio;
}

/* MemBioText - what was written to a memory BIO, palloc'd; frees the BIO */
char *
MemBioText(BIO *bio)
{
	char	   *data;
	long		len = BIO_get_mem_data(bio, &data);
	char	   *result = pnstrdup(data, len);

	BIO_free(bio);
	return result;
}

/* ---- base64url (JWS) and base64 (x5c) ---- */

static const char b64url_alphabet[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Base64UrlEncode - unpadded base64url of data, palloc'd and terminated */
char *
Base64UrlEncode(const unsigned char *data, size_t len)
{
	char	   *out = palloc((len + 2) / 3 * 4 + 1);
	char	   *p = out;
	size_t		i;

	for (i = 0; i + 2 < len; i += 3)
	{
		uint32		v = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];

		*p++ = b64url_alphabet[(v >> 18) & 63];
		*p++ = b64url_alphabet[(v >> 12) & 63];
		*p++ = b64url_alphabet[(v >> 6) & 63];
		*p++ = b64url_alphabet[v & 63];
	}
	if (i < len)
	{
		uint32		v = data[i] << 16;

		if (i + 1 < len)
			v |= data[i + 1] << 8;
		*p++ = b64url_alphabet[(v >> 18) & 63];
		*p++ = b64url_alphabet[(v >> 12) & 63];
		if (i + 1 < len)
			*p++ = b64url_alphabet[(v >> 6) & 63];
	}
	*p = '\0';
	return out;
}

/*
 * base64url_value - the value of each byte as a base64url character, or -1:
 * a table, because every byte of every JWS is checked and decoded
 */
#define B64_ROW_INVALID -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1
const int8 base64url_value[256] = {
	B64_ROW_INVALID, B64_ROW_INVALID,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1,	/* '-' */
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,	/* '0'..'9' */
	-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,	/* 'A'.. */
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63, /* ..'Z', '_' */
	-1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, /* 'a'.. */
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1, /* ..'z' */
	B64_ROW_INVALID, B64_ROW_INVALID, B64_ROW_INVALID, B64_ROW_INVALID,
	B64_ROW_INVALID, B64_ROW_INVALID, B64_ROW_INVALID, B64_ROW_INVALID
};

/*
 * Base64UrlDecode - decode unpadded base64url; NULL when data is not that.
 * The result is palloc'd and has a terminating zero after *outlen bytes.
 */
unsigned char *
Base64UrlDecode(const char *data, size_t len, size_t *outlen)
{
	unsigned char *out;
	unsigned char *p;
	uint32		acc = 0;
	int			bits = 0;

	if (len % 4 == 1)
		return NULL;
	out = palloc(len / 4 * 3 + 3);
	p = out;
	for (size_t i = 0; i < len; i++)
	{
		int			v = Base64UrlValue((unsigned char) data[i]);

		if (v < 0)
		{
			pfree(out);
			return NULL;
		}
		acc = (acc << 6) | v;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			*p++ = (acc >> bits) & 0xff;
		}
	}
	*p = '\0';
	*outlen = p - out;
	return out;
}

/* Base64Encode - standard padded base64 (for "x5c"), palloc'd */
char *
Base64Encode(const unsigned char *data, size_t len)
{
	int			enclen = pg_b64_enc_len(len);
	char	   *out = palloc(enclen + 1);
	int			n = pg_b64_encode((const pg_b64_byte *) data, len, out, enclen);

	if (n < 0)
		elog(ERROR, "could not encode base64");
	out[n] = '\0';
	return out;
}

/* Base64Decode - standard base64 (for "x5c"); NULL when data is not that */
unsigned char *
Base64Decode(const char *data, size_t len, size_t *outlen)
{
	int			declen = pg_b64_dec_len(len);
	unsigned char *out = palloc(declen + 1);
	int			n = pg_b64_decode(data, len, (pg_b64_byte *) out, declen);

	if (n < 0)
	{
		pfree(out);
		return NULL;
	}
	*outlen = n;
	return out;
}

/* ---- SHA-256 ---- */

/* Sha256 - the SHA-256 of len bytes into out (32 bytes) */
void
Sha256(const void *data, size_t len, unsigned char *out)
{
	if (!EVP_Digest(data, len, out, NULL, EVP_sha256(), NULL))
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not compute SHA-256", NULL);
}

/*
 * Sha256Base64Url - unpadded base64url of the SHA-256 of len bytes: the
 * "req" claim, a seal's hashes, an ETag.  OpenSSL directly: the gateway
 * hashes before it opens a transaction, where pg_cryptohash would need a
 * resource owner.
 */
char *
Sha256Base64Url(const void *data, size_t len)
{
	unsigned char digest[SHA256_LEN];

	Sha256(data, len, digest);
	return Base64UrlEncode(digest, SHA256_LEN);
}

/* NewSha256 - a digest context to feed with EVP_DigestUpdate, or an ERROR */
EVP_MD_CTX *
NewSha256(void)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	if (md == NULL || !EVP_DigestInit_ex(md, EVP_sha256(), NULL))
	{
		EVP_MD_CTX_free(md);
		OpenSSLError(ERRCODE_OUT_OF_MEMORY, "could not start a SHA-256 digest", NULL);
	}
	return md;
}
