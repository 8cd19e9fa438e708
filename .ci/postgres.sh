# shellcheck shell=bash
# Sourced by .ci/run: a PostgreSQL server for the storage conformance suite
# (crates/storage/tests/conformance.rs) and tests/e2e/test_postgresql.py.
# Debian's packages and default cluster (installed and started when
# missing), a role jackdaw (password jackdaw, CREATEDB); the tests create and
# drop their own databases. Exports JACKDAW_TEST_POSTGRES_URL, and
# JACKDAW_TEST_POSTGRES_TLS_CA for the TLS test (the server's certificate
# for localhost, made when it has none). Idempotent: a
# second run finds everything in place and only checks it.
# An already set JACKDAW_TEST_POSTGRES_URL is used as it is.

setup_postgres() {
    if [ -n "${JACKDAW_TEST_POSTGRES_URL:-}" ]; then
        echo ".ci/postgres.sh: using the given JACKDAW_TEST_POSTGRES_URL"
        return 0
    fi
    if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || ! command -v pg_lsclusters >/dev/null; then
        if [ "$(id -u)" -ne 0 ]; then
            echo ".ci/postgres.sh: PostgreSQL missing and not root to install it" >&2
            return 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends postgresql
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo ".ci/postgres.sh: not root: cannot start the cluster as the postgres user" >&2
        return 1
    fi
    local version port status
    version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
    if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { found = 1 } END { exit !found }'; then
        pg_createcluster "$version" main
    fi
    status=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $4 }')
    if [ "$status" != "online" ]; then
        # Without systemd (a container), pg_ctlcluster runs pg_ctl as the
        # cluster's owner itself.
        pg_ctlcluster "$version" main start
    fi
    port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $3 }')
    local tries=0
    until pg_isready -q -h 127.0.0.1 -p "$port"; do
        tries=$((tries + 1))
        if [ "$tries" -ge 60 ]; then
            echo ".ci/postgres.sh: PostgreSQL $version did not accept connections on port $port" >&2
            return 1
        fi
        sleep 0.5
    done
    runuser -u postgres -- psql -p "$port" -X -q -v ON_ERROR_STOP=1 -d postgres <<'SQL'
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'jackdaw') THEN
        ALTER ROLE jackdaw LOGIN CREATEDB PASSWORD 'jackdaw';
    ELSE
        CREATE ROLE jackdaw LOGIN CREATEDB PASSWORD 'jackdaw';
    END IF;
END
$$;
SQL
    # Databases a killed earlier run left behind.
    local leftover
    for leftover in $(runuser -u postgres -- psql -p "$port" -X -Atqc \
        "SELECT datname FROM pg_database WHERE datname ~ '^jackdaw_(test|e2e)_'"); do
        runuser -u postgres -- psql -p "$port" -X -qc "DROP DATABASE IF EXISTS \"$leftover\" WITH (FORCE)"
    done
    export JACKDAW_TEST_POSTGRES_URL="postgresql://jackdaw:jackdaw@127.0.0.1:$port/postgres"
    # TLS (sql.ssl): the cluster's certificate must name localhost, as
    # Debian's snakeoil one does on a machine called localhost; otherwise
    # one is made for it. Its file is the CA the TLS test trusts.
    local ssl cert dir
    ssl=$(runuser -u postgres -- psql -p "$port" -X -Atqc "SHOW ssl")
    cert=$(runuser -u postgres -- psql -p "$port" -X -Atqc "SHOW ssl_cert_file")
    case "$cert" in /*) ;; *) cert="/var/lib/postgresql/$version/main/$cert" ;; esac
    if [ "$ssl" != "on" ] || ! openssl x509 -in "$cert" -noout -checkhost localhost 2>/dev/null | grep -q "does match"; then
        dir=/var/lib/postgresql/jackdaw-test-tls
        mkdir -p "$dir"
        # An end-entity certificate (CA:FALSE): rustls refuses a CA
        # certificate as a server's, which is what `req -x509` makes by default.
        printf '%s\n' '[req]' 'distinguished_name = dn' 'x509_extensions = ext' 'prompt = no' \
            '[dn]' 'CN = localhost' \
            '[ext]' 'basicConstraints = critical, CA:FALSE' 'subjectAltName = DNS:localhost' \
            'keyUsage = critical, digitalSignature, keyEncipherment' 'extendedKeyUsage = serverAuth' \
            >"$dir/openssl.cnf"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -config "$dir/openssl.cnf" \
            -keyout "$dir/server.key" -out "$dir/server.crt" 2>/dev/null
        chown -R postgres:postgres "$dir"
        chmod 600 "$dir/server.key"
        runuser -u postgres -- psql -p "$port" -X -q \
            -c "ALTER SYSTEM SET ssl_cert_file = '$dir/server.crt'" \
            -c "ALTER SYSTEM SET ssl_key_file = '$dir/server.key'" \
            -c "ALTER SYSTEM SET ssl = on" \
            -c "SELECT pg_reload_conf()" >/dev/null
        cert="$dir/server.crt"
    fi
    export JACKDAW_TEST_POSTGRES_TLS_CA="$cert"
    echo ".ci/postgres.sh: PostgreSQL $version on port $port (TLS certificate $cert), JACKDAW_TEST_POSTGRES_URL exported"
}
