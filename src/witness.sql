
-- Witnesses (src/witness.c): peers that cosign this node's newest seal, so
-- that removing or rewriting the newest seals is seen by another node.

-- the peers this node sends its newest seal to
CREATE TABLE interop.witness (
    member      interop.member_id PRIMARY KEY,
    added_at    timestamptz NOT NULL DEFAULT now(),
    added_by    regrole NOT NULL DEFAULT current_user::regrole
);
COMMENT ON TABLE interop.witness IS 'the peers that cosign this node''s newest seal (interop.add_witness)';
SELECT pg_catalog.pg_extension_config_dump('interop.witness', '');

-- how the requests to each witness fare; written by the sync worker
CREATE TABLE interop.witness_status (
    member          interop.member_id PRIMARY KEY REFERENCES interop.witness ON DELETE CASCADE,
    witnessed_seal  bigint,             -- the newest seal the witness has cosigned, as it said
    failures        integer NOT NULL DEFAULT 0,     -- in a row
    failed_total    bigint NOT NULL DEFAULT 0,
    last_error      text,
    last_attempt_at timestamptz,
    last_success_at timestamptz,
    next_attempt    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.witness_status IS 'the requests of the sync worker to each witness: the seal it cosigned last, failures, the last error';

-- the cosignatures this node received: each witness's signed word that it
-- saw this node's chain of seals up to seal_id, whose JWS hashes to head
CREATE TABLE interop.cosignature (
    id          bigserial PRIMARY KEY,
    witness     interop.member_id NOT NULL,
    seal_id     bigint NOT NULL,
    head        text NOT NULL,          -- base64url SHA-256 of that seal's JWS
    cosigned_at timestamptz NOT NULL,   -- as the witness says
    jws         text NOT NULL,          -- the cosignature, signed by the witness
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (witness, seal_id)
);
COMMENT ON TABLE interop.cosignature IS 'cosignatures of this node''s newest seals by its witnesses; interop.verify_log() compares the seals with them';
SELECT pg_catalog.pg_extension_config_dump('interop.cosignature', '');
SELECT pg_catalog.pg_extension_config_dump('interop.cosignature_id_seq', '');

-- the heads this node cosigned as a witness of other nodes
CREATE TABLE interop.witnessed_head (
    id          bigserial PRIMARY KEY,
    node        interop.member_id NOT NULL,
    seal_id     bigint NOT NULL,
    head        text NOT NULL,          -- base64url SHA-256 of the seal's JWS
    seal        text NOT NULL,          -- the node's seal, as it sent it
    cosignature text NOT NULL,          -- this node's answer
    cosigned_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (node, seal_id)
);
COMMENT ON TABLE interop.witnessed_head IS 'the newest seals of other nodes this node cosigned as their witness';
SELECT pg_catalog.pg_extension_config_dump('interop.witnessed_head', '');
SELECT pg_catalog.pg_extension_config_dump('interop.witnessed_head_id_seq', '');

-- a node whose new seals do not extend the head this node cosigned: its
-- newest seals were removed or rewritten, and its signed request says so
CREATE TABLE interop.witness_alarm (
    id              bigserial PRIMARY KEY,
    node            interop.member_id NOT NULL,
    seen_at         timestamptz NOT NULL DEFAULT now(),
    witnessed_seal  bigint NOT NULL,    -- the head this node had cosigned
    witnessed_head  text NOT NULL,
    offered_seal    bigint NOT NULL,    -- the head the node offered instead
    offered_head    text NOT NULL,
    problem         text NOT NULL,
    request         text NOT NULL,      -- the node's signed request: its own word
    UNIQUE (node, offered_head)
);
COMMENT ON TABLE interop.witness_alarm IS 'nodes whose new seals do not extend the head this node cosigned as their witness';
SELECT pg_catalog.pg_extension_config_dump('interop.witness_alarm', '');
SELECT pg_catalog.pg_extension_config_dump('interop.witness_alarm_id_seq', '');

CREATE TRIGGER cosignature_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON interop.cosignature
    FOR EACH STATEMENT EXECUTE FUNCTION interop.log_append_only();
CREATE TRIGGER witnessed_head_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON interop.witnessed_head
    FOR EACH STATEMENT EXECUTE FUNCTION interop.log_append_only();
CREATE TRIGGER witness_alarm_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON interop.witness_alarm
    FOR EACH STATEMENT EXECUTE FUNCTION interop.log_append_only();
CREATE TRIGGER witness_history AFTER INSERT OR UPDATE OR DELETE ON interop.witness
    FOR EACH ROW EXECUTE FUNCTION interop.admin_history_record();

CREATE FUNCTION interop.add_witness(member interop.member_id) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    PERFORM interop.refuse_on_standby('interop.add_witness()');
    IF member IS NULL THEN
        RAISE EXCEPTION 'member must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF member = (SELECT n.member_id FROM interop.node n) THEN
        RAISE EXCEPTION 'a node cannot be its own witness'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A witness is another node of the federation that keeps a copy of this node''s newest seal.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM interop.peer p WHERE p.member_id = add_witness.member) THEN
        RAISE EXCEPTION 'peer "%" is not known', member
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'A witness is reached at its gateway, which interop.peer names.',
                  HINT = format('Add it first: SELECT interop.add_peer(%L, ''https://host:port'');', member);
    END IF;
    INSERT INTO interop.witness AS w (member) VALUES (add_witness.member) ON CONFLICT DO NOTHING;
    IF FOUND THEN
        INSERT INTO interop.witness_status (member) VALUES (add_witness.member);
    END IF;
    PERFORM interop.wake_sync_worker();     -- send it the newest seal after commit
END
$$;
COMMENT ON FUNCTION interop.add_witness(interop.member_id) IS
    'makes a peer a witness: the sync worker sends it each newest seal to cosign';

CREATE FUNCTION interop.remove_witness(member interop.member_id) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    PERFORM interop.refuse_on_standby('interop.remove_witness()');
    DELETE FROM interop.witness w WHERE w.member = remove_witness.member;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'witness "%" is not known', member
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT member FROM interop.witness.';
    END IF;
END
$$;
COMMENT ON FUNCTION interop.remove_witness(interop.member_id) IS
    'stops sending seals to a witness; its cosignatures stay';

REVOKE ALL ON FUNCTION interop.add_witness(interop.member_id), interop.remove_witness(interop.member_id) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.add_witness(interop.member_id), interop.remove_witness(interop.member_id) TO interop_admin;
REVOKE ALL ON interop.witness, interop.witness_status, interop.cosignature, interop.witnessed_head,
    interop.witness_alarm FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON interop.witness TO interop_admin;
GRANT SELECT ON interop.witness, interop.witness_status, interop.cosignature, interop.witnessed_head,
    interop.witness_alarm TO interop_admin, interop_auditor, interop_worker;
GRANT INSERT ON interop.witness_status TO interop_admin, interop_worker;
GRANT UPDATE ON interop.witness_status TO interop_worker;
GRANT INSERT ON interop.cosignature, interop.witnessed_head, interop.witness_alarm TO interop_worker;
GRANT USAGE ON SEQUENCE interop.cosignature_id_seq, interop.witnessed_head_id_seq, interop.witness_alarm_id_seq
    TO interop_worker;
