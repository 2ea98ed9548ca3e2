-- interop.member_id: INSTANCE/CLASS/CODE[/SUBSYSTEM]

-- canonical form: instance and class upper-cased, code and subsystem kept
SELECT 'mn/gov/1234567/population'::interop.member_id;
SELECT '  EE/COM/70000310  '::interop.member_id;
SELECT 'ee/com/ab.c_d-1/Sub-system_1.2'::interop.member_id;

-- accessors
SELECT interop.instance(m), interop.member_class(m), interop.member_code(m), interop.subsystem(m)
FROM (VALUES ('MN/GOV/1234567/population'::interop.member_id), ('EE/COM/70000310')) AS t(m);

-- malformed ids: each says what is wrong
SELECT ''::interop.member_id;
SELECT 'MN/GOV'::interop.member_id;
SELECT 'MN/GOV/1/sub/extra'::interop.member_id;
SELECT 'MN//1234567'::interop.member_id;
SELECT 'MN/GOV/1234567/'::interop.member_id;
SELECT '/GOV/1'::interop.member_id;
SELECT 'MN/GOV/12 34'::interop.member_id;
SELECT 'MN/G.V/1'::interop.member_id;
SELECT 'MN/GOV/1;DROP TABLE x'::interop.member_id;
SELECT E'MN/GOV/1\x01'::interop.member_id;
SELECT 'MN/GOV/ä'::interop.member_id;
SELECT (repeat('X', 33) || '/GOV/1')::interop.member_id;
SELECT ('MN/GOV/' || repeat('1', 65))::interop.member_id;
SELECT repeat('MN/GOV/1', 100)::interop.member_id;

-- the operators live in schema interop, like the rest of the extension
SELECT 'MN/GOV/1'::interop.member_id = 'MN/GOV/1'::interop.member_id;
SET search_path = public, interop;

-- equality is on the canonical form; order is part by part
SELECT 'mn/gov/1'::interop.member_id = 'MN/GOV/1'::interop.member_id AS equal_ci_codes,
       'MN/GOV/a'::interop.member_id = 'MN/GOV/A'::interop.member_id AS equal_code_case;
SELECT m FROM (VALUES ('MN/GOV/1-2'), ('MN/GOV/1/x'), ('MN/GOV/1'), ('MN/GO-V/1'), ('MN/GOV/1.5'), ('EE/GOV/9'))
    AS t(m) ORDER BY m::interop.member_id;

-- btree and hash opclasses serve indexes, joins and grouping
CREATE TABLE members (id interop.member_id PRIMARY KEY, name text);
CREATE INDEX members_hash ON members USING hash (id);
INSERT INTO members SELECT 'MN/GOV/' || i || '/sys', 'agency ' || i FROM generate_series(1, 2000) i;
INSERT INTO members VALUES ('mn/gov/1/sys', 'duplicate');
ANALYZE members;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM members WHERE id = 'MN/GOV/42/sys';
SELECT * FROM members WHERE id = 'mn/gov/42/sys';
SET enable_indexscan = off; SET enable_bitmapscan = on;
SELECT count(*) FROM members WHERE id = 'MN/GOV/43/sys';
RESET enable_seqscan; RESET enable_indexscan; RESET enable_bitmapscan;
SET enable_mergejoin = off; SET enable_nestloop = off;
SELECT count(*) FROM members a JOIN members b USING (id);
RESET enable_mergejoin; RESET enable_nestloop;
SELECT interop.member_class(id), count(*) FROM members GROUP BY 1;
DROP TABLE members;

-- binary output is the canonical text
SELECT interop.member_id_send('mn/gov/1/x');
RESET search_path;
