-- x509.sql: trust anchors and certificate revocation lists

CREATE TABLE interop.trust_anchor (
    fingerprint text PRIMARY KEY,          -- hex SHA-256 of the DER certificate
    subject     text NOT NULL,
    not_before  timestamptz NOT NULL,
    not_after   timestamptz NOT NULL,
    certificate text NOT NULL,             -- PEM
    added_at    timestamptz NOT NULL DEFAULT now(),
    added_by    name NOT NULL DEFAULT session_user
);
COMMENT ON TABLE interop.trust_anchor IS 'CA certificates that this node trusts; delete a row to stop trusting it';

CREATE TABLE interop.crl (
    issuer       text PRIMARY KEY,
    this_update  timestamptz NOT NULL,
    next_update  timestamptz,
    crl          text NOT NULL,            -- PEM
    installed_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.crl IS 'the newest installed certificate revocation list of each issuer';

CREATE TRIGGER trust_anchor_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON interop.trust_anchor FOR EACH STATEMENT EXECUTE FUNCTION interop.invalidate_cache();
CREATE TRIGGER crl_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON interop.crl FOR EACH STATEMENT EXECUTE FUNCTION interop.invalidate_cache();

SELECT pg_catalog.pg_extension_config_dump('interop.trust_anchor', '');
SELECT pg_catalog.pg_extension_config_dump('interop.crl', '');

CREATE FUNCTION interop.add_trust_anchor(pem text) RETURNS int
    AS 'MODULE_PATHNAME', 'interop_add_trust_anchor' LANGUAGE C VOLATILE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.add_trust_anchor(text) IS
    'trusts the CA certificates of a PEM bundle; returns how many were new';

-- intermediate CAs: seen in the chains the workers verified, or passed to
-- add_crl(); a CRL signed by one of them is accepted once it chains to an anchor
CREATE TABLE interop.ca_certificate (
    fingerprint text PRIMARY KEY,          -- hex SHA-256 of the DER certificate
    subject     text NOT NULL,
    certificate text NOT NULL,             -- PEM
    seen_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.ca_certificate IS 'intermediate CAs seen in verified chains: the issuers of CRLs this node may install';
SELECT pg_catalog.pg_extension_config_dump('interop.ca_certificate', '');
REVOKE ALL ON interop.ca_certificate FROM PUBLIC;
GRANT SELECT ON interop.ca_certificate TO interop_admin, interop_auditor;
GRANT SELECT, INSERT ON interop.ca_certificate TO interop_worker;

CREATE FUNCTION interop.add_crl(pem text, ca_chain text DEFAULT NULL) RETURNS bool
    AS 'MODULE_PATHNAME', 'interop_add_crl' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.add_crl(text, text) IS
    'installs a revocation list signed by a trust anchor or a CA that chains to one (ca_chain: that CA, leaf first); returns false when a newer one is installed';

REVOKE ALL ON FUNCTION interop.add_trust_anchor(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.add_crl(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.add_trust_anchor(text) TO interop_admin;
GRANT EXECUTE ON FUNCTION interop.add_crl(text, text) TO interop_admin;
GRANT SELECT, DELETE ON interop.trust_anchor, interop.crl TO interop_admin;
GRANT SELECT ON interop.trust_anchor, interop.crl TO interop_auditor;
GRANT SELECT ON interop.trust_anchor TO interop_worker;
GRANT SELECT, INSERT, UPDATE ON interop.crl TO interop_worker;   -- CRLs fetched from distribution points

-- OCSP: the certificates seen (in verified chains and the node's own) that
-- name a responder, and the responder's last checked answer about each
CREATE TABLE interop.ocsp_response (
    fingerprint text PRIMARY KEY,           -- hex SHA-256 of the DER certificate
    subject     text NOT NULL,
    certificate text NOT NULL,              -- PEM
    issuer      text NOT NULL,              -- PEM of the issuing CA
    responder   text NOT NULL,              -- the http:// URL the certificate names
    response    bytea,                      -- the last answer that checked (DER), the one stapled
    status      text CHECK (status IN ('good', 'revoked', 'unknown')),
    revoked_at  timestamptz,
    this_update timestamptz,
    next_update timestamptz,
    fetched_at  timestamptz,                -- the last answer that checked
    checked_at  timestamptz,                -- the last attempt
    failures    int NOT NULL DEFAULT 0,     -- attempts failed in a row
    last_error  text,
    next_fetch  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.ocsp_response IS 'OCSP answers about the certificates seen, fetched by the sync worker before they stop counting (interop.ocsp_max_age)';
CREATE TRIGGER ocsp_response_invalidate AFTER INSERT OR UPDATE OF response OR DELETE OR TRUNCATE
    ON interop.ocsp_response FOR EACH STATEMENT EXECUTE FUNCTION interop.invalidate_cache();
REVOKE ALL ON interop.ocsp_response FROM PUBLIC;
GRANT SELECT, DELETE ON interop.ocsp_response TO interop_admin;
GRANT SELECT ON interop.ocsp_response TO interop_auditor;
GRANT SELECT, INSERT, UPDATE ON interop.ocsp_response TO interop_worker;
