-- stats.sql: counters of exchanges since the server started (src/stats.c)

CREATE FUNCTION interop.stat_counters(kind text)
RETURNS TABLE (name text, status int, requests bigint, total_ms double precision,
               last_error text, last_error_at timestamptz)
    AS 'MODULE_PATHNAME', 'interop_stat_counters' LANGUAGE C VOLATILE STRICT;
REVOKE ALL ON FUNCTION interop.stat_counters(text) FROM PUBLIC;

CREATE VIEW interop.stat_gateway AS
    SELECT name AS service, status, requests,
           round((total_ms / nullif(requests, 0))::numeric, 3) AS avg_ms, last_error, last_error_at
    FROM interop.stat_counters('gateway');
COMMENT ON VIEW interop.stat_gateway IS 'requests answered by the gateway since the server started, by service and HTTP status';

CREATE VIEW interop.stat_peer AS
    SELECT name AS peer, status, requests AS calls,
           round((total_ms / nullif(requests, 0))::numeric, 3) AS avg_ms, last_error, last_error_at
    FROM interop.stat_counters('peer');
COMMENT ON VIEW interop.stat_peer IS 'calls this node made to peers since the server started, by peer and HTTP status (0: no answer)';

REVOKE ALL ON interop.stat_gateway, interop.stat_peer FROM PUBLIC;
-- pg_monitor: a monitoring agent reads the counters, and nothing else of
-- interop (what PUBLIC may run in the schema is the member_id and jws types'
-- functions and normalize_base_url)
GRANT USAGE ON SCHEMA interop TO pg_monitor;
GRANT SELECT ON interop.stat_gateway, interop.stat_peer TO interop_admin, interop_auditor, pg_monitor;
-- a view runs its functions with the reader's privileges
GRANT EXECUTE ON FUNCTION interop.stat_counters(text) TO interop_admin, interop_auditor, pg_monitor;
