-- keys.sql: the node identity (its private key is a file, never a column)

CREATE TABLE interop.node (
    singleton                bool PRIMARY KEY DEFAULT true CHECK (singleton),
    member_id                interop.member_id NOT NULL,
    alg                      text NOT NULL CHECK (alg IN ('ES256', 'EdDSA', 'PS256', 'RS256')),
    public_key               text NOT NULL,     -- PEM
    certificate_chain        text,              -- PEM, leaf first
    certificate_not_after    timestamptz,
    created_at               timestamptz NOT NULL DEFAULT now(),
    certificate_installed_at timestamptz,
    pending_alg              text CHECK (pending_alg IN ('ES256', 'EdDSA', 'PS256', 'RS256')),
    pending_public_key       text,              -- PEM: a rotated key waiting for its certificate
    pending_at               timestamptz
);
COMMENT ON TABLE interop.node IS 'this node''s member id, public key and certificate chain (one row)';

CREATE TRIGGER node_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON interop.node FOR EACH STATEMENT EXECUTE FUNCTION interop.invalidate_cache();
SELECT pg_catalog.pg_extension_config_dump('interop.node', '');

CREATE FUNCTION interop.init_node(member_id interop.member_id, alg text DEFAULT 'ES256',
                                  overwrite bool DEFAULT false) RETURNS text
    AS 'MODULE_PATHNAME', 'interop_init_node' LANGUAGE C VOLATILE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.init_node(interop.member_id, text, bool) IS
    'creates the node key (a 0600 file in the data directory) and identity; returns the public key PEM';

CREATE FUNCTION interop.certificate_request() RETURNS text
    AS 'MODULE_PATHNAME', 'interop_certificate_request' LANGUAGE C VOLATILE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.certificate_request() IS
    'a PEM certificate signing request for the node key, subject CN = the member id';

CREATE FUNCTION interop.install_certificate(chain_pem text) RETURNS void
    AS 'MODULE_PATHNAME', 'interop_install_certificate' LANGUAGE C VOLATILE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.install_certificate(text) IS
    'installs the node certificate chain (leaf first) after checking trust, dates, key and member id';

CREATE FUNCTION interop.rotate_key(alg text DEFAULT NULL) RETURNS text
    AS 'MODULE_PATHNAME', 'interop_rotate_key' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.rotate_key(text) IS
    'a new node key, pending until install_certificate() of its certificate; returns its certificate request. The current key signs until then';
REVOKE ALL ON FUNCTION interop.rotate_key(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.rotate_key(text) TO interop_admin;

REVOKE ALL ON FUNCTION interop.init_node(interop.member_id, text, bool) FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.certificate_request() FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.install_certificate(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.init_node(interop.member_id, text, bool) TO interop_admin;
GRANT EXECUTE ON FUNCTION interop.certificate_request() TO interop_admin;
GRANT EXECUTE ON FUNCTION interop.install_certificate(text) TO interop_admin;
GRANT SELECT ON interop.node TO interop_admin, interop_auditor, interop_worker;
