# nodes.sh: sourced by the benchmarks.  Two nodes on this machine, a
# provider (population) and a consumer (tax), with identities from a test
# CA; the provider publishes a 100 000-row table "person" as the service
# "person" and serves PostgreSQL over TLS too, for postgres_fdw; the
# consumer has the peer and a foreign table remote_person.  Defines P and C
# (psql on each), PROVIDER, CONSUMER, tmp, the ports, the pgbench scripts
# interop.sql, fdw.sql and local.sql, and a trap that stops both.
# As root, bench_as_user re-runs the calling script as interop_test.

# bench_as_user SCRIPT ARGS...: as root, run SCRIPT as interop_test and exit
bench_as_user() {
    [ "$(id -u)" -eq 0 ] || return 0
    local script=$1; shift
    id interop_test >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin interop_test
    work=$(mktemp -d /tmp/interop-bench.XXXXXX); cp -a "$top/test" "$work/"; chown -R interop_test "$work"
    trap 'rm -rf "$work"' EXIT
    runuser -u interop_test -- "$work/test/bench/$script" "$@"
    exit
}

# start_nodes: make, start and fill both nodes
start_nodes() {
export PATH="$(pg_config --bindir):$PATH"
tmp=$(mktemp -d /tmp/interop-bench-run.XXXXXX)
base=$((20000 + RANDOM % 20000))
pport=$base; gport=$((base + 1)); cport=$((base + 2))
trap 'for n in provider consumer; do pg_ctl -D "$tmp/$n" -m immediate stop >/dev/null 2>&1 || true; done; rm -rf "$tmp"' EXIT
testca="$top/test/certs/testca"
PROVIDER='MN/GOV/1000001/population'
CONSUMER='MN/GOV/2000002/tax'

# the provider serves PostgreSQL over TLS too, for postgres_fdw
initdb -D "$tmp/provider" -A trust -U postgres --no-sync >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
    -keyout "$tmp/provider/server.key" -out "$tmp/provider/server.crt" 2>/dev/null
chmod 600 "$tmp/provider/server.key"
cat >> "$tmp/provider/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$tmp'
port = $pport
ssl = on
shared_preload_libraries = 'interop'
interop.listen_addresses = '127.0.0.1'
interop.port = $gport
${GATEWAY_WORKERS:+interop.gateway_workers = $GATEWAY_WORKERS}
CONF
echo "hostssl all all 127.0.0.1/32 trust" > "$tmp/provider/pg_hba.conf"
echo "local all all trust" >> "$tmp/provider/pg_hba.conf"
initdb -D "$tmp/consumer" -A trust -U postgres --no-sync >/dev/null
cat >> "$tmp/consumer/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$tmp'
port = $cport
shared_preload_libraries = 'interop'
interop.gateway_workers = 0
CONF
for n in provider consumer; do pg_ctl -D "$tmp/$n" -l "$tmp/$n.log" -w start >/dev/null; done
P() { psql -X -h "$tmp" -p "$pport" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
C() { psql -X -h "$tmp" -p "$cport" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

# identities from a test CA
"$testca" root "$tmp/ca" root && "$testca" sub "$tmp/ca" issuing root
for n in provider consumer; do
    if [ $n = provider ]; then q=P; m=$PROVIDER; else q=C; m=$CONSUMER; fi
    $q -qc 'CREATE EXTENSION interop' -c "SELECT interop.init_node('$m')" >/dev/null
    $q -qAtc 'SELECT interop.certificate_request()' > "$tmp/$n.csr"
    "$testca" sign "$tmp/ca" issuing "$tmp/$n.csr" "$tmp/$n.crt"
    "$testca" chain "$tmp/ca" issuing "$tmp/$n.crt" > "$tmp/$n.chain"
    $q -q -v root="$(cat "$tmp/ca/root/ca.crt")" -v chain="$(cat "$tmp/$n.chain")" >/dev/null <<'SQL'
SELECT interop.add_trust_anchor(:'root');
SELECT interop.install_certificate(:'chain');
SQL
done

P -q -o /dev/null <<SQL
CREATE TABLE person (id text PRIMARY KEY, name text, born date, income numeric);
INSERT INTO person SELECT 'P' || i, 'Person ' || i, date '1950-01-01' + i % 20000, i * 10.5
FROM generate_series(1, 100000) i;
VACUUM ANALYZE person;
SELECT interop.publish('person', 'person', filter_columns => '{id}', subject_column => 'id');
SELECT interop.grant_access('person', '$CONSUMER', purposes => '{benchmark}');
SQL
C -q -o /dev/null <<SQL
SELECT interop.add_peer('$PROVIDER', 'https://127.0.0.1:$gport');
CREATE EXTENSION postgres_fdw;
CREATE SERVER provider FOREIGN DATA WRAPPER postgres_fdw
    OPTIONS (host '127.0.0.1', port '$pport', dbname 'postgres', sslmode 'require');
CREATE USER MAPPING FOR postgres SERVER provider OPTIONS (user 'postgres');
CREATE FOREIGN TABLE remote_person (id text, name text, born date, income numeric)
    SERVER provider OPTIONS (table_name 'person');
SQL

cat > "$tmp/interop.sql" <<SQL
\\set k random(1, 100000)
SELECT * FROM interop.query('$PROVIDER', 'person', jsonb_build_object('id', 'P' || :k), 'benchmark');
SQL
cat > "$tmp/fdw.sql" <<'SQL'
\set k random(1, 100000)
SELECT * FROM remote_person WHERE id = 'P' || :k;
SQL
cp "$tmp/fdw.sql" "$tmp/local.sql"; sed -i 's/remote_person/person/' "$tmp/local.sql"

# wait for the gateway, and check that each way returns the row
for i in $(seq 1 100); do
    [ "$(grep -c 'interop gateway [0-9]* listening' "$tmp/provider.log")" -ge "$(P -qAtc 'SHOW interop.gateway_workers')" ] && break; sleep 0.1
done
[ "$(C -qAtc "SELECT q->>'name' FROM interop.query('$PROVIDER', 'person', '{\"id\":\"P42\"}', 'benchmark') q")" = "Person 42" ]
[ "$(C -qAtc "SELECT name FROM remote_person WHERE id = 'P42'")" = "Person 42" ]
P -qAtc "SELECT pg_stat_statements_reset()" >/dev/null 2>&1 || true
}
