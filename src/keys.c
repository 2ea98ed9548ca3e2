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
static char *pending_key_path = NULL;
static char *pending_final_path = NULL;
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

/* NodeRelationChanged - is relid interop.node (or unknown)? */
bool
NodeRelationChanged(Oid relid)
{
	return relid == InvalidOid || relid == node_relid;
}

/* InvalidateNodeCache - forget the loaded identity */
void
InvalidateNodeCache(void)
{
	node_generation++;
	if (node_state == NULL)
		return;
	EVP_PKEY_free(node_state->key);
	sk_X509_pop_free(node_state->chain, X509_free);
	if (node_state->header_b64)
		pfree(node_state->header_b64);
	pfree(node_state);
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

/*
 * GetNodeState - the node's identity, loaded once per backend.  Raises an
 * ERROR with a hint when the node is not initialised.
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
	plan = SPI_prepare("SELECT member_id::text, alg, certificate_chain FROM interop.node", 0, NULL);
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
		key = ReadKeyFile(pending_key_path ? pending_key_path : NodeKeyPath());
		st->key = key;
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
			if (unlink(pending_key_path) != 0 && errno != ENOENT)
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
	char	   *pub;
	int			ret;
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];

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
	if (stat(path, &st) == 0 && !overwrite)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("this node already has a key"),
				 errdetail("The key file \"%s\" exists.", NodeKeyFile()),
				 errhint("To replace it, call interop.init_node(..., overwrite => true); signatures by the old key and its certificate stop being usable.")));

	key = GenerateKey(alg);
	pub = PublicKeyPEM(key);

	/* write next to the final name; the commit moves it into place */
	{
		char	   *tmp = psprintf("%s.new", path);

		if (!xact_callback_registered)
		{
			RegisterXactCallback(NodeXactCallback, NULL);
			xact_callback_registered = true;
		}
		WriteKeyFile(key, tmp);
		pending_key_path = MemoryContextStrdup(TopMemoryContext, tmp);
		pending_final_path = MemoryContextStrdup(TopMemoryContext, path);
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
								"created_at = now(), certificate_installed_at = NULL",
								3, types, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not write interop.node: %s", SPI_result_code_string(ret));
	SPI_finish();
	InvalidateNodeCache();

	PG_RETURN_TEXT_P(cstring_to_text(pub));
}

PG_FUNCTION_INFO_V1(interop_certificate_request);
/* interop_certificate_request - a PEM CSR for the node key, CN = member id */
Datum
interop_certificate_request(PG_FUNCTION_ARGS)
{
	NodeState  *st = GetNodeState();
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
								   (const unsigned char *) st->member_id, -1, -1, 0) &&
		X509_REQ_set_subject_name(req, name) &&
		X509_REQ_set_pubkey(req, st->key) &&
		X509_REQ_sign(req, st->key, st->alg == JWS_ALG_EDDSA ? NULL : EVP_sha256()) > 0;
	X509_NAME_free(name);
	bio = ok ? BIO_new(BIO_s_mem()) : NULL;
	if (!ok || bio == NULL || !PEM_write_bio_X509_REQ(bio, req))
	{
		BIO_free(bio);
		X509_REQ_free(req);
		OpenSSLError(ERRCODE_INTERNAL_ERROR, "could not create the certificate request", NULL);
	}
	X509_REQ_free(req);
	PG_RETURN_TEXT_P(cstring_to_text(MemBioText(bio)));
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

	leafkey = X509_get0_pubkey(leaf);
	if (leafkey == NULL || EVP_PKEY_eq(leafkey, st->key) != 1)
	{
		ERR_clear_error();
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_KEY_MISMATCH),
				 errmsg("certificate does not match the node key"),
				 errdetail("The first certificate of the chain carries another public key than the node's."),
				 errhint("Put the node's own certificate first, then its issuers; request it with interop.certificate_request().")));
	}
	cert_member = CertificateMemberId(leaf);
	if (cert_member == NULL || strcmp(cert_member, st->member_id) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTEROP_MEMBER_MISMATCH),
				 errmsg("certificate does not name this node's member id"),
				 errdetail("The node is \"%s\"; the certificate's subject CN is %s.",
						   st->member_id,
						   cert_member ? psprintf("\"%s\"", cert_member) : "not a member id"),
				 errhint("Ask the CA for a certificate issued from interop.certificate_request().")));

	(void) VerifyChainWindow(chain, &nb, &na);

	/* store the chain re-encoded, one PEM block per certificate */
	initStringInfo(&out);
	for (int i = 0; i < sk_X509_num(chain); i++)
		appendStringInfoString(&out, CertificatePEM(sk_X509_value(chain, i)));

	values[0] = CStringGetTextDatum(out.data);
	values[1] = TimestampTzGetDatum(time_t_to_timestamptz(na));
	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
	ret = SPI_execute_with_args("UPDATE interop.node SET certificate_chain = $1, "
								"certificate_not_after = $2, certificate_installed_at = now()",
								2, types, values, NULL, false, 0);
	if (ret != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "could not update interop.node: %s", SPI_result_code_string(ret));
	SPI_finish();
	InvalidateNodeCache();
	PG_RETURN_VOID();
}
