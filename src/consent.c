/*-------------------------------------------------------------------------
 *
 * consent.c
 *	  Deciding consent: is there a valid consent of a subject for this
 *	  consumer, service and purpose, right now?
 *
 * A consent is valid from valid_from until valid_until (open-ended when
 * NULL) unless it was revoked.  The gateway asks for every request to a
 * service with requires_consent (publish.c, CheckConsent), and the consent
 * found is recorded with the exchange in the message log, so the data-access
 * report can name it.  The recording side is src/consent.sql.
 *
 *-------------------------------------------------------------------------
 */
#include "interop.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

/*
 * ValidConsent - the id of the newest valid consent of subject for
 * (consumer, service, purpose) at this moment, or 0 when there is none.
 * The caller is connected to SPI.
 */
int64
ValidConsent(const char *subject, const char *consumer, const char *service, const char *purpose)
{
	Oid			argtypes[4] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[4];
	int			ret;
	bool		isnull;

	values[0] = CStringGetTextDatum(subject);
	values[1] = CStringGetTextDatum(consumer);
	values[2] = CStringGetTextDatum(service);
	values[3] = CStringGetTextDatum(purpose);
	ret = ExecuteCached("SELECT id FROM interop.consent "
						"WHERE subject = $1 AND consumer = $2::interop.member_id AND service = $3 "
						"AND purpose = $4 AND revoked_at IS NULL "
						"AND valid_from <= pg_catalog.clock_timestamp() "
						"AND (valid_until IS NULL OR valid_until > pg_catalog.clock_timestamp()) "
						"ORDER BY id DESC LIMIT 1",
						4, argtypes, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read interop.consent: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return 0;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}
