/*-------------------------------------------------------------------------
 *
 * token.c
 *	  The node key in a PKCS#11 token (an HSM, or SoftHSM2 for tests).
 *
 * interop.key_file set to a PKCS#11 URI (RFC 7512, "pkcs11:token=...;
 * object=...") names a key that never leaves the token: each process
 * loads a handle to it through OpenSSL's pkcs11 engine (libp11, Debian's
 * libengine-pkcs11-openssl), and signing, TLS and certificate requests use
 * that handle exactly as they use a key read from a file.  The PIN is read
 * from interop.pkcs11_pin_file, a file outside the data directory that
 * only the server's OS user can read; interop.pkcs11_module names the
 * token's PKCS#11 library.
 *
 * The engine API is deprecated in OpenSSL 3 (providers replace it), but it
 * is what every supported Debian ships for PKCS#11; its declarations are
 * used here and nowhere else.
 *
 *-------------------------------------------------------------------------
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include "interop.h"

#include <sys/stat.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/fd.h"

#include <openssl/engine.h>
#include <openssl/err.h>

char	   *interop_pkcs11_module = NULL;
char	   *interop_pkcs11_pin_file = NULL;

/* this process's engine, initialised for the module it was given */
static ENGINE *engine = NULL;
static char engine_module[MAXPGPATH];

/* KeyInToken - whether interop.key_file names a key in a PKCS#11 token */
bool
KeyInToken(void)
{
	return interop_key_file != NULL && pg_strncasecmp(interop_key_file, "pkcs11:", 7) == 0;
}

/* TokenPin - the PIN, from interop.pkcs11_pin_file, checked; palloc'd */
static char *
TokenPin(void)
{
	const char *path = interop_pkcs11_pin_file;
	struct stat st;
	FILE	   *f;
	char		buf[256];
	size_t		n;

	if (path == NULL || path[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("interop.pkcs11_pin_file is not set"),
				 errdetail("The node key is in a PKCS#11 token (interop.key_file = '%s'), and logging in to it needs its PIN.",
						   interop_key_file),
				 errhint("Write the PIN to a file outside the data directory, readable only by the server's OS user, and set interop.pkcs11_pin_file to it.")));
	if (!is_absolute_path(path))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("interop.pkcs11_pin_file must be an absolute path"),
				 errhint("The PIN file lives outside the data directory.")));
	if (path_is_prefix_of_path(DataDir, path))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("the PIN file \"%s\" is inside the data directory", path),
				 errdetail("Base backups, standbys and copies of the data directory would carry the PIN along with the data."),
				 errhint("Move it outside the data directory and set interop.pkcs11_pin_file to the new path.")));
	if (stat(path, &st) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read the PIN file \"%s\": %m", path),
				 errhint("Check interop.pkcs11_pin_file.")));
	if (st.st_uid != geteuid() || (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the PIN file \"%s\" can be read by others", path),
				 errdetail("It must belong to the server's OS user and have no group or other permissions (mode 0600 or 0400)."),
				 errhint("chown it to the server's user and chmod 0600 it.")));
	f = AllocateFile(path, "r");
	if (f == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read the PIN file \"%s\": %m", path)));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	FreeFile(f);
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("the PIN file \"%s\" is empty", path)));
	return pstrdup(buf);
}

/* TokenEngine - this process's pkcs11 engine, initialised */
static ENGINE *
TokenEngine(void)
{
	const char *module = interop_pkcs11_module ? interop_pkcs11_module : "";
	ENGINE	   *e;

	if (engine != NULL && strcmp(engine_module, module) == 0)
		return engine;
	if (engine != NULL)
	{
		ENGINE_finish(engine);
		ENGINE_free(engine);
		engine = NULL;
	}
	ERR_clear_error();
	e = ENGINE_by_id("pkcs11");
	if (e == NULL)
		OpenSSLError(ERRCODE_FEATURE_NOT_SUPPORTED, "OpenSSL's pkcs11 engine is not installed",
					 "Install it (Debian: apt-get install libengine-pkcs11-openssl), or keep the node key in a file.");
	if ((module[0] != '\0' && !ENGINE_ctrl_cmd_string(e, "MODULE_PATH", module, 0)) || !ENGINE_init(e))
	{
		ENGINE_free(e);
		OpenSSLError(ERRCODE_CONFIG_FILE_ERROR,
					 psprintf("could not load the PKCS#11 module \"%s\"", module[0] ? module : "(the engine's default)"),
					 "Set interop.pkcs11_module to the token's PKCS#11 library (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so).");
	}
	engine = e;
	strlcpy(engine_module, module, sizeof(engine_module));
	return engine;
}

/*
 * TokenKey - a handle to the private key interop.key_file names in its
 * token, logged in with the PIN; an ERROR that names the cause otherwise.
 * The caller owns the key, as one ReadKeyFile() returns.
 */
EVP_PKEY *
TokenKey(void)
{
	ENGINE	   *e = TokenEngine();
	char	   *pin = TokenPin();
	EVP_PKEY   *key;
	bool		pin_set;

	ERR_clear_error();
	pin_set = ENGINE_ctrl_cmd_string(e, "PIN", pin, 0);
	explicit_bzero(pin, strlen(pin));
	if (!pin_set)
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not give the PIN to the pkcs11 engine", NULL);
	key = ENGINE_load_private_key(e, interop_key_file, NULL, NULL);
	if (key == NULL)
	{
		StringInfoData why;
		unsigned long err;

		/* every reason in the queue: libp11's (the login, the slot) come first */
		initStringInfo(&why);
		while ((err = ERR_get_error()) != 0)
		{
			const char *reason = ERR_reason_error_string(err);

			appendStringInfo(&why, "%s%s", why.len ? "; " : "", reason ? reason : ERR_error_string(err, NULL));
		}
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not load the node key from the PKCS#11 token: \"%s\"", interop_key_file),
				 why.len ? errdetail("OpenSSL's pkcs11 engine: %s.", why.data) :
				 errdetail("The token, or the key in it, was not found, or logging in failed."),
				 errhint("Check that the token is present (softhsm2-util --show-slots, or the HSM's tools), that the URI names its token label and the key's object label, and that interop.pkcs11_pin_file holds its user PIN.")));
	}
	return key;
}
