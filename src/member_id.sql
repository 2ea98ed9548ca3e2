-- member_id.sql: the interop.member_id type, its operators and opclasses

CREATE TYPE interop.member_id;

CREATE FUNCTION interop.member_id_in(cstring) RETURNS interop.member_id
    AS 'MODULE_PATHNAME', 'member_id_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.member_id_out(interop.member_id) RETURNS cstring
    AS 'MODULE_PATHNAME', 'member_id_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.member_id_recv(internal) RETURNS interop.member_id
    AS 'MODULE_PATHNAME', 'member_id_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.member_id_send(interop.member_id) RETURNS bytea
    AS 'MODULE_PATHNAME', 'member_id_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE interop.member_id (
    INPUT = interop.member_id_in,
    OUTPUT = interop.member_id_out,
    RECEIVE = interop.member_id_recv,
    SEND = interop.member_id_send,
    INTERNALLENGTH = VARIABLE,
    STORAGE = extended,
    CATEGORY = 'S',
    COLLATABLE = false
);
COMMENT ON TYPE interop.member_id IS
    'identifier of an agency or one of its systems: INSTANCE/CLASS/CODE[/SUBSYSTEM]';

CREATE FUNCTION interop.member_id_cmp(interop.member_id, interop.member_id) RETURNS int
    AS 'MODULE_PATHNAME', 'member_id_cmp' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.member_id_eq(interop.member_id, interop.member_id) RETURNS bool
    AS 'MODULE_PATHNAME', 'member_id_eq' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION interop.member_id_ne(interop.member_id, interop.member_id) RETURNS bool
    AS 'MODULE_PATHNAME', 'member_id_ne' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION interop.member_id_lt(interop.member_id, interop.member_id) RETURNS bool
    AS 'MODULE_PATHNAME', 'member_id_lt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION interop.member_id_le(interop.member_id, interop.member_id) RETURNS bool
    AS 'MODULE_PATHNAME', 'member_id_le' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION interop.member_id_gt(interop.member_id, interop.member_id) RETURNS bool
    AS 'MODULE_PATHNAME', 'member_id_gt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION interop.member_id_ge(interop.member_id, interop.member_id) RETURNS bool
    AS 'MODULE_PATHNAME', 'member_id_ge' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION interop.member_id_hash(interop.member_id) RETURNS int
    AS 'MODULE_PATHNAME', 'member_id_hash' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.member_id_hash_extended(interop.member_id, bigint) RETURNS bigint
    AS 'MODULE_PATHNAME', 'member_id_hash_extended' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR interop.= (
    LEFTARG = interop.member_id, RIGHTARG = interop.member_id,
    PROCEDURE = interop.member_id_eq, COMMUTATOR = OPERATOR(interop.=),
    NEGATOR = OPERATOR(interop.<>), RESTRICT = eqsel, JOIN = eqjoinsel,
    HASHES, MERGES);
CREATE OPERATOR interop.<> (
    LEFTARG = interop.member_id, RIGHTARG = interop.member_id,
    PROCEDURE = interop.member_id_ne, COMMUTATOR = OPERATOR(interop.<>),
    NEGATOR = OPERATOR(interop.=), RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR interop.< (
    LEFTARG = interop.member_id, RIGHTARG = interop.member_id,
    PROCEDURE = interop.member_id_lt, COMMUTATOR = OPERATOR(interop.>),
    NEGATOR = OPERATOR(interop.>=), RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR interop.<= (
    LEFTARG = interop.member_id, RIGHTARG = interop.member_id,
    PROCEDURE = interop.member_id_le, COMMUTATOR = OPERATOR(interop.>=),
    NEGATOR = OPERATOR(interop.>), RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR interop.> (
    LEFTARG = interop.member_id, RIGHTARG = interop.member_id,
    PROCEDURE = interop.member_id_gt, COMMUTATOR = OPERATOR(interop.<),
    NEGATOR = OPERATOR(interop.<=), RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
CREATE OPERATOR interop.>= (
    LEFTARG = interop.member_id, RIGHTARG = interop.member_id,
    PROCEDURE = interop.member_id_ge, COMMUTATOR = OPERATOR(interop.<=),
    NEGATOR = OPERATOR(interop.<), RESTRICT = scalargesel, JOIN = scalargejoinsel);

CREATE OPERATOR CLASS interop.member_id_ops
    DEFAULT FOR TYPE interop.member_id USING btree AS
        OPERATOR 1 interop.<,
        OPERATOR 2 interop.<=,
        OPERATOR 3 interop.=,
        OPERATOR 4 interop.>=,
        OPERATOR 5 interop.>,
        FUNCTION 1 interop.member_id_cmp(interop.member_id, interop.member_id);

CREATE OPERATOR CLASS interop.member_id_hash_ops
    DEFAULT FOR TYPE interop.member_id USING hash AS
        OPERATOR 1 interop.=,
        FUNCTION 1 interop.member_id_hash(interop.member_id),
        FUNCTION 2 interop.member_id_hash_extended(interop.member_id, bigint);

-- accessors
CREATE FUNCTION interop.instance(interop.member_id) RETURNS text
    AS 'MODULE_PATHNAME', 'member_id_instance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.member_class(interop.member_id) RETURNS text
    AS 'MODULE_PATHNAME', 'member_id_class' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.member_code(interop.member_id) RETURNS text
    AS 'MODULE_PATHNAME', 'member_id_code' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.subsystem(interop.member_id) RETURNS text
    AS 'MODULE_PATHNAME', 'member_id_subsystem' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION interop.instance(interop.member_id) IS 'the federation instance of a member id, e.g. MN';
COMMENT ON FUNCTION interop.member_class(interop.member_id) IS 'the member class of a member id, e.g. GOV';
COMMENT ON FUNCTION interop.member_code(interop.member_id) IS 'the member code of a member id, e.g. 1234567';
COMMENT ON FUNCTION interop.subsystem(interop.member_id) IS 'the subsystem of a member id, or NULL when it names the member itself';
