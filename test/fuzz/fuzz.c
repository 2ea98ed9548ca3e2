/*-------------------------------------------------------------------------
 *
 * fuzz.c
 *		libFuzzer targets, run inside a real PostgreSQL backend.
 *
 * test/fuzz/run builds the extension once more with clang, coverage
 * instrumentation, ASan and UBSan, links this file and libFuzzer (without
 * its main) into it, and calls interop_fuzz(target, args) from a
 * single-user backend.  libFuzzer then feeds each target inputs for as
 * long as args say, and exits the process when done.
 *
 * Each input runs in a subtransaction.  An ERROR with a proper SQLSTATE is
 * the expected answer to bad input and is rolled back; what counts as a
 * finding, and aborts so that libFuzzer saves the input:
 *   - a crash or a sanitizer report (by the runtime itself);
 *   - an ERROR without an SQLSTATE (XX000: an elog for "cannot happen");
 *   - an ERROR that is a syntax error (42601): an input reached SQL text.
 *
 * Targets:
 *   member_id  MemberIdParse() on the input as a string
 *   jws        JwsVerifyCompact() on the input as a compact JWS, the key
 *              taken from its x5c chain (as the gateway does)
 *   request    the input as the claims of a request: signed with the
 *              node's key, then CheckRequest() (the claims parser and every
 *              check after the signature) and, when it verifies, the
 *              service: ServeRequest() or ServeChanges()
 *   response   CheckResponse() on the input as an answer body
 *
 * With INTEROP_FUZZ_VERBOSE set, each input's ERROR is printed.
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

extern int	LLVMFuzzerRunDriver(int *argc, char ***argv, int (*cb) (const uint8_t *data, size_t size));

PG_FUNCTION_INFO_V1(interop_fuzz);

static char target;

/* OneInput - the target on one input, in a subtransaction */
static void
OneInput(const uint8_t *data, size_t size)
{
	char	   *s = palloc(size + 1);

	memcpy(s, data, size);
	s[size] = '\0';
	switch (target)
	{
		case 'm':
			{
				char	   *canonical;
				char	   *problem;

				if (strlen(s) == size)
					(void) MemberIdParse(s, &canonical, &problem);
				break;
			}
		case 'j':
			{
				const char *signer;
				size_t		plen;

				(void) JwsVerifyCompact(s, size, NULL, JWS_TYP_REQUEST, &signer, &plen);
				break;
			}
		case 'q':
			{
				ExchangeRequest req;
				char	   *body;

				if (strlen(s) != size)
					break;		/* a JWS payload is text */
				body = JwsSignJson(s, size, JWS_TYP_REQUEST);
				memset(&req, 0, sizeof(req));
				CheckRequest(body, strlen(body), NULL, &req);
				if (SPI_connect() != SPI_OK_CONNECT)
					elog(ERROR, "SPI_connect failed");
				{
					ServiceRequest sreq;
					ServiceAnswer ans;
					ServiceRefusal refusal;
					char	   *answer_json;

					memset(&ans, 0, sizeof(ans));
					memset(&refusal, 0, sizeof(refusal));
					sreq.service = req.svc;
					sreq.consumer = req.iss;
					sreq.params = req.params;
					sreq.purpose = req.purpose;
					if (req.since != NULL)
						(void) ServeChanges(&sreq, req.since, &ans, &answer_json, &refusal);
					else if (ServeRequest(&sreq, &ans, &refusal))
						(void) AnswerJson(&ans);
				}
				SPI_finish();
				break;
			}
		case 'r':
			{
				char	   *code;
				char	   *message;

				(void) CheckResponse(s, size, GetNodeState()->member_id,
									 "00000000-0000-4000-8000-000000000000", "x", &code, &message);
				break;
			}
	}
}

/* Callback - libFuzzer's entry: one input; a finding aborts */
static int
Callback(const uint8_t *data, size_t size)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	MemoryContext work = AllocSetContextCreate(cxt, "interop fuzz input", ALLOCSET_DEFAULT_SIZES);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(work);
	PG_TRY();
	{
		OneInput(data, size);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(work);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		if (getenv("INTEROP_FUZZ_VERBOSE") != NULL)
			fprintf(stderr, "interop fuzz: ERROR %s: %s\n", unpack_sql_state(edata->sqlerrcode), edata->message);
		if (edata->sqlerrcode == ERRCODE_INTERNAL_ERROR || edata->sqlerrcode == ERRCODE_SYNTAX_ERROR)
		{
			fprintf(stderr, "interop fuzz: finding: ERROR %s: %s%s%s\n", unpack_sql_state(edata->sqlerrcode),
					edata->message, edata->detail ? " DETAIL: " : "", edata->detail ? edata->detail : "");
			abort();
		}
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	MemoryContextDelete(work);
	return 0;
}

/*
 * interop_fuzz(target text, args text) - run libFuzzer on target; args are
 * its command line (corpus directories, -max_total_time=..., ...), split
 * at spaces.  Does not return: libFuzzer exits the process.
 */
Datum
interop_fuzz(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *args = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	  **argv = palloc0(sizeof(char *) * (strlen(args) + 2));
	int			argc = 0;
	char	   *save;

	if (strcmp(name, "member_id") == 0)
		target = 'm';
	else if (strcmp(name, "jws") == 0)
		target = 'j';
	else if (strcmp(name, "request") == 0)
		target = 'q';
	else if (strcmp(name, "response") == 0)
		target = 'r';
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown fuzz target \"%s\"", name),
				 errhint("The targets are member_id, jws, request and response.")));
	/* as the gateway's workers run */
	SetConfigOption("search_path", "pg_catalog, interop", PGC_SUSET, PGC_S_OVERRIDE);
	argv[argc++] = psprintf("interop_fuzz_%s", name);
	for (char *a = strtok_r(args, " ", &save); a != NULL; a = strtok_r(NULL, " ", &save))
		argv[argc++] = a;
	argv[argc] = NULL;
	PG_RETURN_INT32(LLVMFuzzerRunDriver(&argc, &argv, Callback));
}
