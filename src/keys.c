/*-------------------------------------------------------------------------
 *
 * keys.c
 *	  The node's identity: its signing key, its member id and its
 *	  certificate chain.  init_node(), certificate_request() and
 *	  install_certificate().
 *
 * The private key lives in one file under the data directory
 * (interop.key_file, default "interop/node.key"), mode 0600, owned by the
 * server's OS user.  No function of the extension takes a file name or
 * returns the key: SQL can reach the public key and the certificate only.
 *
 * init_node() writes the new key next to the final name and moves it into
 * place when the transaction commits (a transaction callback), so a rolled
 * back init_node() leaves the old key, and a committed one never leaves a
 * node row without its key.  The rest of the identity is the single row of
 * interop.node.
 *
 * Each backend keeps the loaded key, member id, chain and the signed
 * header's encoding (NodeState).  A statement trigger on interop.node sends
 * a relcache invalidation for it, and our callback drops the state, so
 * every session signs with the new identity from its next transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

static NodeState *node_state = NULL;
static Oid	node_relid = InvalidOid;
static uint64 node_generation = 0;

/* key written by init_node() in this transaction, moved into place at commit */
/*
 * A key file that moves at commit: pending_key_path becomes
 * pending_final_path.  init_node() and rotate_key() write a new file next
 * to its final name (an abort removes it); install_certificate() of a
 * rotated key's certificate moves the pending key over the node key (an
 * abort leaves it pending).  pending_is_node_key: the file that moves is
 * the node's key within this transaction already.
 */
static char *pending_key_path = NULL;
static char *pending_final_path = NULL;
static bool pending_unlink_on_abort = true;
static bool pending_is_node_key = true;

static void NodeXactCallback(XactEvent event, void *arg);
static bool xact_callback_registered = false;

/* NodeKeyFile - the key file as configured, for messages */
static const char *
NodeKeyFile(void)
{
	return (interop_key_file && interop_key_file[0]) ?
		interop_key_file : "interop/node.key";
}

/* NodeKeyPath - absolute path of the key file */
static char *
NodeKeyPath(void)
{
	const char *f = NodeKeyFile();

	if (is_absolute_path(f))
		return pstrdup(f);
	return psprintf("%s/%s", DataDir, f);
}

/* PendingKeyPath - where a rotated key waits for its certificate */
static char *
PendingKeyPath(void)
{
	return psprintf("%s.pending", NodeKeyPath());
}

/* CurrentKeyPath - the file of the node's key as this transaction sees it */
static char *
CurrentKeyPath(void)
{
	return pending_key_path && pending_is_node_key ? pstrdup(pending_key_path) : NodeKeyPath();
}

/* MoveAtCommit - pending_key_path becomes final at commit (see above) */
static void
MoveAtCommit(const char *from, const char *to, bool unlink_on_abort, bool is_node_key)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(NodeXactCallback, NULL);
		xact_callback_registered = true;
	}
	pending_key_path = MemoryContextStrdup(TopMemoryContext, from);
	pending_final_path = MemoryContextStrdup(TopMemoryContext, to);
	pending_unlink_on_abort = unlink_on_abort;
	pending_is_node_key = is_node_key;
}

/* NodeRelationChanged - is relid interop.node (or unknown)? */
bool
NodeRelationChanged(Oid relid)
{
	return relid == InvalidOid || relid == node_relid;
}

/* FreeNodeState - free a dropped identity (RetireAtTransactionEnd) */
static void
FreeNodeState(void *arg)
{
	NodeState  *st = arg;

	EVP_PKEY_free(st->key);
	sk_X509_pop_free(st->chain, X509_free);
	for (int i = 0; i < JWS_TYP_COUNT; i++)
		if (st->header_b64[i])
			pfree(st->header_b64[i]);
	pfree(st);
}

/*
 * InvalidateNodeCache - forget the loaded identity.  It is freed when the
 * transaction ends: a caller may still hold it.
 */
void
InvalidateNodeCache(void)
{
	node_generation++;
	if (node_state == NULL)
		return;
	RetireAtTransactionEnd(FreeNodeState, node_state);
	node_state = NULL;
}

/* ReadKeyFile - the private key in path, or an ERROR that names the file */
static EVP_PKEY *
ReadKeyFile(const char *path)
{
	const char *name = NodeKeyFile();

	FILE	   *f;
	EVP_PKEY   *key;

	ERR_clear_error();
	f = AllocateFile(path, "r");
	if (f == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open the node key file \"%s\": %m", name),
				 errhint("Restore the key file from a backup, or create a new key with interop.init_node(..., overwrite => true) and install a new certificate.")));
	key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	FreeFile(f);
	if (key == NULL)
		OpenSSLError(ERRCODE_DATA_CORRUPTED,
					 psprintf("could not read the node key file \"%s\"", name),
					 "Restore the key file from a backup, or create a new key with interop.init_node(..., overwrite => true).");
	return key;
}

static char *PublicKeyPEM(EVP_PKEY *key);

/*
 * GetNodeState - the node's identity, loaded once per backend.  Raises an
 * ERROR with a hint when the node is not initialised, and when the key
 * file is not the key interop.node publishes: on a standby promoted after
 * the primary's key was rotated, or after a restore with another node's
 * key file, the node must not sign as the member with a key no one can
 * verify (or with a key its certificate does not name).
 */
NodeState *
GetNodeState(void)
{
	MemoryContext oldcxt;
	NodeState  *st;
	SPIPlanPtr	plan;
	int			ret;
	char	   *member_id;
	char	   *alg;
	char	   *chain_pem;
	char	   *public_key;
	bool		isnull;
	EVP_PKEY   *key;
	uint64		generation;

	if (node_state != NULL)
		return node_state;

retry:
	generation = node_generation;
	node_relid = get_relname_relid("node", get_namespace_oid("interop", false));

	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
	plan = SPI_prepare("SELECT member_id::text, alg, certificate_chain, public_key FROM interop.node", 0, NULL);
	if (plan == NULL)
		elog(ERROR, "could not prepare a query on interop.node: %s", SPI_result_code_string(SPI_result));
	/* the latest committed row, as catalog reads see it, whatever our snapshot */
	ret = SPI_execute_snapshot(plan, NULL, NULL, GetLatestSnapshot(), InvalidSnapshot,
							   true, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.node: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this node has no identity yet"),
				 errhint("Run SELECT interop.init_node('INSTANCE/CLASS/CODE'); as interop_admin.")));
	member_id = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	alg = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	chain_pem = isnull ? NULL : SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	public_key = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4);

	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	st = palloc0(sizeof(NodeState));
	MemoryContextSwitchTo(oldcxt);
	strlcpy(st->member_id, member_id, sizeof(st->member_id));
	st->alg = JwsAlgFromName(alg);

	/* the chain, owned by the state */
	if (chain_pem)
	{
		STACK_OF(X509) *chain = ParseCertificatesPEM(chain_pem, "node certificate chain");

		st->chain = sk_X509_new_null();
		for (int i = 0; i < sk_X509_num(chain); i++)
		{
			X509	   *c = sk_X509_value(chain, i);

			X509_up_ref(c);
			sk_X509_push(st->chain, c);
		}
	}
	SPI_finish();

	PG_TRY();
	{
		key = KeyInToken() ? TokenKey() : ReadKeyFile(CurrentKeyPath());
		st->key = key;
		if (public_key == NULL || strcmp(PublicKeyPEM(key), public_key) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the node key file is not the key of interop.node"),
					 errdetail("The key in \"%s\" has another public key than the one interop.node publishes for %s: "
							   "init_node() last ran on another server (a primary whose key was rotated after this standby was made, or the node whose key file was restored here), or with another key.",
							   KeyInToken() ? interop_key_file : CurrentKeyPath(), member_id),
					 errhint("Copy the key file from the server where interop.init_node() last ran (docs/operations.md, \"High availability\"), or run interop.init_node(..., overwrite => true) here and install a new certificate.")));
		JwsAlgCheckKey(st->alg, key);
	}
	PG_CATCH();
	{
		EVP_PKEY_free(st->key);
		sk_X509_pop_free(st->chain, X509_free);
		pfree(st);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (generation != node_generation)
	{
		/* the row changed while we read it: read it again */
		EVP_PKEY_free(st->key);
		sk_X509_pop_free(st->chain, X509_free);
		pfree(st);
		goto retry;
	}
	node_state = st;
	return st;
}

/* NodeXactCallback - move a key written in this transaction into place */
static void
NodeXactCallback(XactEvent event, void *arg)
{
	if (pending_key_path == NULL)
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
			/* an error here aborts the transaction, which removes the file */
			if (durable_rename(pending_key_path, pending_final_path, ERROR) != 0)
				elog(ERROR, "could not move the node key into place");
			pfree(pending_key_path);
			pfree(pending_final_path);
			pending_key_path = pending_final_path = NULL;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			if (pending_unlink_on_abort && unlink(pending_key_path) != 0 && errno != ENOENT)
				ereport(WARNING,
						(errcode_for_file_access(),
						 errmsg("could not remove \"%s\": %m", pending_key_path)));
			pfree(pending_key_path);
			pfree(pending_final_path);
			pending_key_path = pending_final_path = NULL;
			InvalidateNodeCache();
			break;
		default:
			break;
	}
}

/* WriteKeyFile - write key to path with mode 0600, durably */
static void
WriteKeyFile(EVP_PKEY *key, const char *path)
{
	BIO		   *bio = BIO_new(BIO_s_mem());
	char	   *data;
	long		len;
	int			fd;
	char	   *dir = pstrdup(path);
	char	   *slash = strrchr(dir, '/');

	if (slash != NULL && slash != dir)
	{
		*slash = '\0';
		if (MakePGDirectory(dir) != 0 && errno != EEXIST)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create directory \"%s\": %m", dir)));
	}

	ERR_clear_error();
	if (bio == NULL || !PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL))
	{
		BIO_free(bio);
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not encode the node key", NULL);
	}
	len = BIO_get_mem_data(bio, &data);

	fd = OpenTransientFilePerm(path, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY, S_IRUSR | S_IWUSR);
	if (fd < 0)
	{
		BIO_free(bio);
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create the node key file \"%s\": %m", path)));
	}
	/* the file may have existed with looser permissions */
	if (fchmod(fd, S_IRUSR | S_IWUSR) != 0 ||
		write(fd, data, len) != len ||
		pg_fsync(fd) != 0)
	{
		int			save_errno = errno;

		OPENSSL_cleanse(data, len);
		BIO_free(bio);
		CloseTransientFile(fd);
		unlink(path);
		errno = save_errno ? save_errno : ENOSPC;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write the node key file \"%s\": %m", path)));
	}
	OPENSSL_cleanse(data, len);
	BIO_free(bio);
	if (CloseTransientFile(fd) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not close the node key file \"%s\": %m", path)));
}

/* GenerateKey - a new key for alg */
static EVP_PKEY *
GenerateKey(JwsAlg alg)
{
	EVP_PKEY   *key = NULL;

	ERR_clear_error();
	switch (alg)
	{
		case JWS_ALG_ES256:
			key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
			break;
		case JWS_ALG_EDDSA:
			key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
			break;
		case JWS_ALG_PS256:
		case JWS_ALG_RS256:
			key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 3072);
			break;
		case JWS_ALG_INVALID:
			break;
	}
	if (key == NULL)
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not generate the node key", NULL);
	OwnEVPKey(key);
	return key;
}

/* PublicKeyPEM - the public half of key in PEM form, palloc'd */
static char *
PublicKeyPEM(EVP_PKEY *key)
{
	BIO		   *bio = NewMemBio();

	if (!PEM_write_bio_PUBKEY(bio, key))
	{
		BIO_free(bio);
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not encode the public key", NULL);
	}
	return MemBioText(bio);
}

PG_FUNCTION_INFO_V1(interop_init_node);
/*
 * interop_init_node - create the node key and identity; returns the public
 * key in PEM form.  An existing key is replaced only with overwrite.
 */
Datum
interop_init_node(PG_FUNCTION_ARGS)
{
	text	   *member_id = PG_GETARG_TEXT_PP(0);
	char	   *alg_name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	bool		overwrite = PG_GETARG_BOOL(2);
	JwsAlg		alg = JwsAlgFromName(alg_name);
	char	   *path = NodeKeyPath();
	struct stat st;
	EVP_PKEY   *key;
	char	   *pub = NULL;
	int			ret;
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];

	RefuseOnStandby("interop.init_node()");

	if (alg == JWS_ALG_INVALID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unsupported signature algorithm \"%s\"", alg_name),
				 errhint("Use one of ES256 (the default), EdDSA, PS256 or RS256.")));
	if (pending_key_path != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("interop.init_node() was already called in this transaction"),
				 errhint("Commit or roll back first.")));
	if (KeyInToken())
	{
		/* the key is the token's: generated or imported there, never here */
		if (overwrite)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("the node key is in a PKCS#11 token: interop.init_node() does not replace it"),
					 errhint("Generate or import a new key in the token, point interop.key_file at it, reload, and call interop.init_node() without overwrite.")));
		key = TokenKey();
		OwnEVPKey(key);
		JwsAlgCheckKey(alg, key);
		pub = PublicKeyPEM(key);
	}
	else if (stat(path, &st) == 0 && !overwrite)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("this node already has a key"),
				 errdetail("The key file \"%s\" exists.", NodeKeyFile()),
				 errhint("To replace it, call interop.init_node(..., overwrite => true); signatures by the old key and its certificate stop being usable.")));

	if (!KeyInToken())
	{
		/* write next to the final name; the commit moves it into place */
		char	   *tmp = psprintf("%s.new", path);

		key = GenerateKey(alg);
		pub = PublicKeyPEM(key);

		WriteKeyFile(key, tmp);
		MoveAtCommit(tmp, path, true, true);
	}

	values[0] = PointerGetDatum(member_id);
	values[1] = CStringGetTextDatum(JwsAlgName(alg));
	values[2] = CStringGetTextDatum(pub);
	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
	ret = SPI_execute_with_args("INSERT INTO interop.node AS n (member_id, alg, public_key) "
								"VALUES ($1::text::interop.member_id, $2, $3) "
								"ON CONFLICT (singleton) DO UPDATE SET member_id = excluded.member_id, "
								"alg = excluded.alg, public_key = excluded.public_key, "
								"certificate_chain = NULL, certificate_not_after = NULL, "
								"created_at = now(), certificate_installed_at = NULL, "
								"pending_alg = NULL, pending_public_key = NULL, pending_at = NULL",
								3, types, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not write interop.node: %s", SPI_result_code_string(ret));
	SPI_finish();
	InvalidateNodeCache();

	PG_RETURN_TEXT_P(cstring_to_text(pub));
}

/* CertificateRequestPEM - a PEM CSR for key, subject CN = member, signed by key */
static char *
CertificateRequestPEM(EVP_PKEY *key, JwsAlg alg, const char *member)
{
	X509_REQ   *req;
	X509_NAME  *name;
	BIO		   *bio;
	bool		ok;

	ERR_clear_error();
	req = X509_REQ_new();
	name = X509_NAME_new();
	ok = req != NULL && name != NULL &&
		X509_REQ_set_version(req, 0) &&
		X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
								   (const unsigned char *) member, -1, -1, 0) &&
		X509_REQ_set_subject_name(req, name) &&
		X509_REQ_set_pubkey(req, key) &&
		X509_REQ_sign(req, key, alg == JWS_ALG_EDDSA ? NULL : EVP_sha256()) > 0;
	X509_NAME_free(name);
	bio = ok ? BIO_new(BIO_s_mem()) : NULL;
	if (!ok || bio == NULL || !PEM_write_bio_X509_REQ(bio, req))
	{
		BIO_free(bio);
		X509_REQ_free(req);
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not create the certificate request", NULL);
	}
	X509_REQ_free(req);
	return MemBioText(bio);
}

PG_FUNCTION_INFO_V1(interop_certificate_request);
/* interop_certificate_request - a PEM CSR for the node key, CN = member id */
Datum
interop_certificate_request(PG_FUNCTION_ARGS)
{
	NodeState  *st = GetNodeState();

	PG_RETURN_TEXT_P(cstring_to_text(CertificateRequestPEM(st->key, st->alg, st->member_id)));
}

PG_FUNCTION_INFO_V1(interop_rotate_key);
/*
 * interop_rotate_key - the first step of a key rotation without an outage:
 * a new key, pending, and the certificate request for it.  The current key
 * goes on signing (with its certificate in x5c) until install_certificate()
 * of the new key's certificate makes the new key the node's; the old public
 * key stays in interop.node_key, so what it signed still verifies.
 */
Datum
interop_rotate_key(PG_FUNCTION_ARGS)
{
	NodeState  *st;
	JwsAlg		alg;
	EVP_PKEY   *key;
	char	   *tmp;
	char	   *csr;
	int			ret;
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];

	RefuseOnStandby("interop.rotate_key()");
	if (KeyInToken())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the node key is in a PKCS#11 token: interop.rotate_key() does not make keys there"),
				 errhint("Generate or import the new key in the token; docs/operations.md, \"The node key in a token\", says how to switch.")));
	if (pending_key_path != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the node key was already changed in this transaction"),
				 errhint("Commit or roll back first.")));
	st = GetNodeState();
	alg = PG_ARGISNULL(0) ? st->alg : JwsAlgFromName(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	if (alg == JWS_ALG_INVALID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unsupported signature algorithm \"%s\"", text_to_cstring(PG_GETARG_TEXT_PP(0))),
				 errhint("Use one of ES256, EdDSA, PS256 or RS256.")));
	key = GenerateKey(alg);
	tmp = psprintf("%s.new", PendingKeyPath());
	WriteKeyFile(key, tmp);
	MoveAtCommit(tmp, PendingKeyPath(), true, false);

	values[0] = CStringGetTextDatum(JwsAlgName(alg));
	values[1] = CStringGetTextDatum(PublicKeyPEM(key));
	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
	ret = SPI_execute_with_args("UPDATE interop.node SET pending_alg = $1, pending_public_key = $2, pending_at = now()",
								2, types, values, NULL, false, 0);
	if (ret != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "could not update interop.node: %s", SPI_result_code_string(ret));
	SPI_finish();
	csr = CertificateRequestPEM(key, alg, st->member_id);
	PG_RETURN_TEXT_P(cstring_to_text(csr));
}

PG_FUNCTION_INFO_V1(interop_install_certificate);
/*
 * interop_install_certificate - install the node's certificate chain (leaf
 * first) after checking that it leads to a trust anchor, is within its dates
 * and not revoked, carries the node's public key and names its member id.
 */
Datum
interop_install_certificate(PG_FUNCTION_ARGS)
{
	char	   *pem = text_to_cstring(PG_GETARG_TEXT_PP(0));
	NodeState  *st = GetNodeState();
	STACK_OF(X509) *chain = ParseCertificatesPEM(pem, "certificate chain");
	X509	   *leaf = sk_X509_value(chain, 0);
	EVP_PKEY   *leafkey;
	const char *cert_member;
	StringInfoData out;
	int			ret;
	Oid			types[2] = {TEXTOID, TIMESTAMPTZOID};
	Datum		values[2];
	time_t		nb,
				na;
	char	   *pending_pub = NULL;
	bool		activate;
	struct stat kst;
	MemoryContext cxt = CurrentMemoryContext;

	RefuseOnStandby("interop.install_certificate()");

	/* the node's key (a renewal), or the pending key of a rotation */
	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
	ret = SPI_execute("SELECT pending_public_key, pending_alg FROM interop.node", true, 1);
	if (ret == SPI_OK_SELECT && SPI_processed == 1)
	{
		pending_pub = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		pending_pub = pending_pub ? MemoryContextStrdup(cxt, pending_pub) : NULL;
	}
	SPI_finish();
	leafkey = X509_get0_pubkey(leaf);
	if (leafkey != NULL && EVP_PKEY_eq(leafkey, st->key) == 1)
		activate = false;
	else if (leafkey != NULL && pending_pub != NULL && strcmp(PublicKeyPEM(leafkey), pending_pub) == 0)
		activate = true;
	else
	{
		ERR_clear_error();
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_KEY_MISMATCH),
				 errmsg("certificate does not match the node key"),
				 errdetail(pending_pub ? "The first certificate of the chain carries another public key than the node's and than the pending key's."
						   : "The first certificate of the chain carries another public key than the node's."),
				 errhint("Put the node's own certificate first, then its issuers; request it with interop.certificate_request(), or with interop.rotate_key() for a new key.")));
	}
	if (activate && pending_key_path != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the node key was already changed in this transaction"),
				 errhint("Commit or roll back first.")));
	if (activate && stat(PendingKeyPath(), &kst) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FILE),
				 errmsg("the pending key of this node is missing"),
				 errdetail("interop.rotate_key() left the new key in \"%s.pending\", and it is not there (a server that took over since, or a restore?).", NodeKeyFile()),
				 errhint("Call interop.rotate_key() again here and ask the CA to certify the new request.")));
	cert_member = CertificateMemberId(leaf);
	if (cert_member == NULL || strcmp(cert_member, st->member_id) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_MEMBER_MISMATCH),
				 errmsg("certificate does not name this node's member id"),
				 errdetail("The node is \"%s\"; the certificate's subject CN is %s.",
						   st->member_id,
						   cert_member ? psprintf("\"%s\"", cert_member) : "not a member id"),
				 errhint("Ask the CA for a certificate issued from interop.certificate_request().")));

	VerifyChainKnownRevocation(chain, &nb, &na);

	/* a certificate that runs out sooner than the one it replaces */
	if (interop_min_certificate_lifetime > 0 &&
		na - time(NULL) < (time_t) interop_min_certificate_lifetime)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_CERTIFICATE_NOT_VALID),
				 errmsg("the certificate expires within interop.min_certificate_lifetime"),
				 errdetail("It is valid until %s; interop.min_certificate_lifetime asks for %d s more from now.",
						   timestamptz_to_str(time_t_to_timestamptz(na)), interop_min_certificate_lifetime),
				 errhint("Ask the CA for a certificate with a longer lifetime.")));
	if (st->chain != NULL && sk_X509_num(st->chain) > 0)
	{
		int			day,
					sec;

		if (ASN1_TIME_diff(&day, &sec, X509_get0_notAfter(sk_X509_value(st->chain, 0)),
						   X509_get0_notAfter(leaf)) && (day < 0 || sec < 0))
			ereport(WARNING,
					(errmsg("the new certificate expires before the one it replaces"),
					 errdetail("It is valid until %s.", timestamptz_to_str(time_t_to_timestamptz(na))),
					 errhint("Check that this is the certificate you meant to install.")));
	}

	/* store the chain re-encoded, one PEM block per certificate */
	initStringInfo(&out);
	for (int i = 0; i < sk_X509_num(chain); i++)
		appendStringInfoString(&out, CertificatePEM(sk_X509_value(chain, i)));

	values[0] = CStringGetTextDatum(out.data);
	values[1] = TimestampTzGetDatum(time_t_to_timestamptz(na));
	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
	ret = SPI_execute_with_args(activate ?
								"UPDATE interop.node SET certificate_chain = $1, "
								"certificate_not_after = $2, certificate_installed_at = now(), "
								"alg = pending_alg, public_key = pending_public_key, "
								"pending_alg = NULL, pending_public_key = NULL, pending_at = NULL" :
								"UPDATE interop.node SET certificate_chain = $1, "
								"certificate_not_after = $2, certificate_installed_at = now()",
								2, types, values, NULL, false, 0);
	if (ret != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "could not update interop.node: %s", SPI_result_code_string(ret));
	SPI_finish();
	/* the pending key becomes the node key at commit; an abort leaves it pending */
	if (activate)
		MoveAtCommit(PendingKeyPath(), NodeKeyPath(), false, true);
	InvalidateNodeCache();
	PG_RETURN_VOID();
}
