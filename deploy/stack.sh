# shellcheck shell=bash
# The local stack: Redis, Postgres and a Kafka-protocol broker for every command.
#
# Source this file, then call `stack_up <dir> <broker: required|optional|later>`
# (`later`: a broker that must first be installed starts in the background). It uses
# REDIS_URL, DATABASE_URL and KAFKA_BROKERS when they are set; for each one that is
# not, it starts a private instance on a free loopback port with its data under
# <dir>, waits until it answers, and exports the variable. With ONSALE_REDIS_CLUSTER=1
# (and no REDIS_URL) the private Redis is a cluster of three masters, and REDIS_URL is
# a redis+cluster:// URL naming them. `stack_down` (installed
# as an EXIT trap) stops what stack_up started.
#
# Missing programs are installed where possible (apt-get as root; cargo install
# tansu); otherwise stack_up stops and names what to install.

STACK_PIDS=()
STACK_PG_DATA=""
STACK_PG_USER=""
STACK_PG_TEMP=""
STACK_LOGS=""

say()  { printf '\033[1m[stack]\033[0m %s\n' "$*" >&2; }
warn() { printf '\033[1;33m[stack] %s\033[0m\n' "$*" >&2; }
die()  { printf '\033[1;31m[stack] %s\033[0m\n' "$*" >&2; exit 1; }

# keep_secret <VAR> <file> <bytes>: a secret for the dev farm. A value the caller
# set in VAR wins; otherwise one made once from /dev/urandom (<bytes> bytes, hex) is
# kept in <file>, so tokens and signed webhooks stay valid across restarts. Exports
# VAR and says which it is.
keep_secret() {
    local var=$1 file=$2 bytes=$3
    if [ -n "${!var:-}" ]; then
        export "${var?}"
        say "$var: the value you set"
        return
    fi
    [ -s "$file" ] || od -An -tx1 -N"$bytes" /dev/urandom | tr -d ' \n' >"$file"
    printf -v "$var" '%s' "$(cat "$file")"
    export "${var?}"
    say "$var: generated, kept in $file (set $var to use your own)"
}

# A TCP port on 127.0.0.1 that nothing listens on, below the kernel's ephemeral range
# (ip_local_port_range): no outgoing connection is ever given such a port, so it is
# still free when its service binds it, and again when a crashed service is started
# again on it.
free_port() {
    local low=32768 port
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    [ "$low" -gt 12000 ] || low=32768
    for _ in $(seq 1 200); do
        port=$(( 10000 + RANDOM % (low - 10000) ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    die "no free port found on 127.0.0.1 below $low"
}

# Waits until something accepts TCP connections on 127.0.0.1:$1, for up to $2 seconds.
wait_tcp() {
    local port=$1 seconds=$2 what=$3
    for _ in $(seq 1 $(( seconds * 10 ))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$what did not start listening on 127.0.0.1:$port within ${seconds}s (log: $STACK_LOGS)"
}

apt_install() {
    local package=$1
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing $package with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" >&2 \
            || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" >&2; } \
            || return 1
        return 0
    fi
    return 1
}

# What the browser tests need: Node.js, Chromium, and playwright-core (npm).
# haproxy, the load balancer in front of two gateways and two realtime nodes in
# e2e/tests/balanced.rs (Debian's package).
ensure_haproxy() {
    command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || apt_install haproxy \
        || die "haproxy is missing: apt-get install haproxy (the load-balanced farm test runs behind it)"
    case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac
}

ensure_pdftotext() {
    command -v pdftotext >/dev/null 2>&1 || apt_install poppler-utils \
        || die "pdftotext is missing: apt-get install poppler-utils (the invoice tests read their PDFs with it)"
}

ensure_browser() {
    command -v node >/dev/null 2>&1 || apt_install nodejs \
        || die "node is missing: install Node.js 18 or later (the browser tests drive Chromium with it)"
    command -v npm >/dev/null 2>&1 || apt_install npm \
        || die "npm is missing: install npm (it installs playwright-core for the browser tests)"
    local chromium=${CHROMIUM:-/usr/bin/chromium}
    if [ ! -x "$chromium" ]; then
        apt_install chromium || die "chromium is missing: apt-get install chromium, or set CHROMIUM to a Chromium binary"
    fi
    local browser_tests="$root/gateway/tests/browser"
    if [ ! -d "$browser_tests/node_modules/playwright-core" ]; then
        say "installing playwright-core for the browser tests (npm ci)"
        (cd "$browser_tests" && npm ci --no-audit --no-fund --loglevel=error >&2) \
            || die "npm ci failed in $browser_tests"
    fi
    # The generated-client test: openapi-typescript, typescript, openapi-fetch.
    local client_tests="$root/gateway/tests/client"
    if [ ! -d "$client_tests/node_modules/openapi-typescript" ]; then
        say "installing the client generator for the contract tests (npm ci)"
        (cd "$client_tests" && npm ci --no-audit --no-fund --loglevel=error >&2) \
            || die "npm ci failed in $client_tests"
    fi
}

# schemathesis (PyPI), for the contract test: in a virtualenv of the project's own
# under target/tools, pinned, so that the run is the same on every machine. Exports
# SCHEMATHESIS with its path.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
    local venv="$root/target/tools/schemathesis-$SCHEMATHESIS_VERSION"
    if [ ! -x "$venv/bin/schemathesis" ]; then
        command -v python3 >/dev/null 2>&1 || apt_install python3 \
            || die "python3 is missing: install Python 3.9 or later (the contract test runs schemathesis)"
        python3 -c 'import venv' 2>/dev/null && python3 -m venv "$venv" 2>/dev/null \
            || { apt_install python3-venv && python3 -m venv "$venv"; } \
            || die "cannot make a Python virtualenv: apt-get install python3-venv"
        say "installing schemathesis $SCHEMATHESIS_VERSION for the contract test (pip, into $venv)"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2 \
            || die "pip could not install schemathesis==$SCHEMATHESIS_VERSION (it needs the PyPI registry)"
    fi
    export SCHEMATHESIS="$venv/bin/schemathesis"
}

pg_bin() {
    local name=$1
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$dir" ] && [ -x "$dir/$name" ]; then echo "$dir/$name"; return 0; fi
    return 1
}

# Runs a command as the unprivileged user that owns the Postgres data directory.
as_pg() {
    if [ -n "$STACK_PG_USER" ]; then
        (cd / && runuser -u "$STACK_PG_USER" -- "$@")
    else
        "$@"
    fi
}

start_redis() {
    local dir=$1
    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server || die "redis-server is missing: install Redis 7 (Debian: apt-get install redis-server) or set REDIS_URL"
    fi
    mkdir -p "$dir/redis"
    local port
    port=$(free_port)
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir/redis" --save '' --appendonly yes --appendfsync always \
        --daemonize no --logfile "$dir/redis/redis.log" >/dev/null 2>&1 &
    STACK_PIDS+=("$!")
    STACK_LOGS="$dir/redis/redis.log"
    wait_tcp "$port" 10 "redis-server"
    export REDIS_URL="redis://127.0.0.1:$port"
    say "redis      $REDIS_URL (private, data in $dir/redis)"
}

# A local Redis Cluster of three masters (no replicas), each a redis-server with
# cluster mode on and its data under <dir>/redis-cluster/<port>. Exports REDIS_URL as
# redis+cluster://… naming all three.
start_redis_cluster() {
    local dir=$1
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-server || die "redis-server and redis-cli are missing: install Redis 7 (Debian: apt-get install redis-server) or set REDIS_URL"
    fi
    local ports=() port node
    for _ in 1 2 3; do
        # A node also listens on its port + 10000 (the cluster bus): both must be free,
        # and free_port may hand out the same port twice before anything listens.
        port=$(free_port)
        while [ "$port" -ge 55000 ] || [[ " ${ports[*]} " == *" $port "* ]] \
            || (exec 3<>"/dev/tcp/127.0.0.1/$(( port + 10000 ))") 2>/dev/null; do
            port=$(free_port)
        done
        ports+=("$port")
    done
    for port in "${ports[@]}"; do
        node="$dir/redis-cluster/$port"
        mkdir -p "$node"
        redis-server --bind 127.0.0.1 --port "$port" --dir "$node" --save '' \
            --appendonly yes --appendfsync everysec \
            --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
            --cluster-require-full-coverage no \
            --daemonize no --logfile "$node/redis.log" >/dev/null 2>&1 &
        STACK_PIDS+=("$!")
        STACK_LOGS="$node/redis.log"
        wait_tcp "$port" 10 "redis-server (cluster node)"
    done
    local nodes=() url=""
    for port in "${ports[@]}"; do nodes+=("127.0.0.1:$port"); url+="127.0.0.1:$port,"; done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$dir/redis-cluster/create.log" 2>&1 \
        || die "redis-cli --cluster create failed (log: $dir/redis-cluster/create.log)"
    # Every node must agree that all 16384 slots are served before a client connects.
    for port in "${ports[@]}"; do
        for _ in $(seq 1 100); do
            redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && break
            sleep 0.1
        done
        redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' \
            || die "the redis cluster did not reach cluster_state:ok on port $port (logs: $dir/redis-cluster)"
    done
    export REDIS_URL="redis+cluster://${url%,}"
    say "redis      $REDIS_URL (private cluster of 3 masters, data in $dir/redis-cluster)"
}

start_postgres() {
    local dir=$1
    local initdb pg_ctl
    initdb=$(pg_bin initdb) && pg_ctl=$(pg_bin pg_ctl) || {
        apt_install postgresql || die "PostgreSQL is missing: install PostgreSQL 15+ (Debian: apt-get install postgresql) or set DATABASE_URL"
        initdb=$(pg_bin initdb) && pg_ctl=$(pg_bin pg_ctl) || die "PostgreSQL installed but initdb/pg_ctl not found"
    }
    if [ "$(id -u)" = 0 ]; then
        # Postgres refuses to run as root.
        if id postgres >/dev/null 2>&1; then
            STACK_PG_USER=postgres
        else
            id onsale-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin onsale-pg \
                || die "cannot create a user to run Postgres as (Postgres refuses to run as root)"
            STACK_PG_USER=onsale-pg
        fi
    fi
    STACK_PG_DATA="$dir/postgres"
    if [ -n "$STACK_PG_USER" ] && ! runuser -u "$STACK_PG_USER" -- test -x "$dir"; then
        # A checkout under a private directory (mktemp's 0700, a home directory) is
        # out of the unprivileged user's reach: keep this instance's data in /tmp.
        STACK_PG_DATA=$(mktemp -d /tmp/onsale-postgres.XXXXXX)
        STACK_PG_TEMP=1
        warn "user $STACK_PG_USER cannot reach $dir; postgres data goes to $STACK_PG_DATA (removed on exit)"
    fi
    mkdir -p "$STACK_PG_DATA"
    [ -n "$STACK_PG_USER" ] && chown -R "$STACK_PG_USER" "$STACK_PG_DATA"
    chmod 700 "$STACK_PG_DATA"
    if [ ! -f "$STACK_PG_DATA/PG_VERSION" ]; then
        as_pg "$initdb" -D "$STACK_PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
            || as_pg "$initdb" -D "$STACK_PG_DATA" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; die "initdb failed (log: $dir/initdb.log)"; }
    fi
    local port
    port=$(free_port)
    STACK_LOGS="$STACK_PG_DATA/postgres.log"
    as_pg "$pg_ctl" -D "$STACK_PG_DATA" -l "$STACK_PG_DATA/postgres.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$STACK_PG_DATA -c max_connections=400 -c shared_buffers=256MB" \
        start >/dev/null || die "postgres did not start (log: $STACK_PG_DATA/postgres.log)"
    local psql
    psql=$(pg_bin psql) || die "psql is missing (it comes with PostgreSQL's client package)"
    as_pg "$psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qtAc \
        "SELECT 1 FROM pg_database WHERE datname = 'onsale'" | grep -q 1 \
        || as_pg "$psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "CREATE DATABASE onsale" \
        || die "cannot create database onsale"
    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/onsale"
    say "postgres   $DATABASE_URL (private, data in $STACK_PG_DATA)"
}

ensure_tansu() {
    command -v tansu >/dev/null 2>&1 && return 0
    [ -x "$HOME/.cargo/bin/tansu" ] && export PATH="$HOME/.cargo/bin:$PATH" && return 0
    command -v cargo >/dev/null 2>&1 || return 1
    say "installing the tansu broker: cargo install tansu --locked --features dynostore"
    say "(once per machine; about 12 minutes on 2 cores)"
    cargo install tansu --locked --features dynostore >&2 || return 1
    export PATH="$HOME/.cargo/bin:$PATH"
}

# Starts tansu on 127.0.0.1:$2 once it is installed (installing it first when it is
# not), in the background: the farm comes up without waiting, and the outbox relay
# and the notifier connect when the broker answers.
start_broker_later() {
    local dir=$1 port=$2
    mkdir -p "$dir/tansu"
    (
        if ! ensure_tansu >"$dir/tansu/install.log" 2>&1; then
            warn "tansu could not be installed (log: $dir/tansu/install.log); domain events wait in the outbox"
            exit 0
        fi
        say "broker     installed; starting it on 127.0.0.1:$port"
        exec tansu broker --storage-engine memory://tansu/ \
            --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
            >"$dir/tansu/tansu.log" 2>&1
    ) &
    STACK_PIDS+=("$!")
    export KAFKA_BROKERS="127.0.0.1:$port"
}

start_broker() {
    local dir=$1 need=$2
    if [ "$need" = later ] && ! command -v tansu >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tansu" ] \
        && command -v cargo >/dev/null 2>&1; then
        local port
        port=$(free_port)
        warn "the tansu broker is not installed: installing it in the background (about 12 minutes, once per machine)."
        warn "the farm runs meanwhile; domain events wait in the outbox and leave when the broker is up"
        warn "(install log: $dir/tansu/install.log)"
        start_broker_later "$dir" "$port"
        say "broker     $KAFKA_BROKERS (private tansu, once installed)"
        return 0
    fi
    if ! ensure_tansu; then
        if [ "$need" = required ]; then
            die "no Kafka-protocol broker: set KAFKA_BROKERS, or install tansu (cargo install tansu --locked --features dynostore)"
        fi
        warn "======================================================================"
        warn " NO KAFKA BROKER: tansu could not be installed and KAFKA_BROKERS is unset."
        warn " onsale runs, but domain events wait in the outbox until a broker exists."
        warn "======================================================================"
        return 0
    fi
    mkdir -p "$dir/tansu"
    local port
    port=$(free_port)
    STACK_LOGS="$dir/tansu/tansu.log"
    tansu broker --storage-engine memory://tansu/ \
        --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
        >"$dir/tansu/tansu.log" 2>&1 &
    STACK_PIDS+=("$!")
    wait_tcp "$port" 30 "tansu"
    export KAFKA_BROKERS="127.0.0.1:$port"
    say "broker     $KAFKA_BROKERS (private tansu, in memory)"
}

stack_down() {
    local pid
    for pid in "${STACK_PIDS[@]}"; do
        # A background broker start is a subshell: stop its children too.
        pkill -P "$pid" 2>/dev/null || true
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STACK_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    STACK_PIDS=()
    if [ -n "$STACK_PG_DATA" ]; then
        local pg_ctl
        pg_ctl=$(pg_bin pg_ctl) && as_pg "$pg_ctl" -D "$STACK_PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
        [ -n "$STACK_PG_TEMP" ] && rm -rf "$STACK_PG_DATA"
        STACK_PG_DATA=""
    fi
}

# stack_up <data dir> <broker: required|optional|later>
stack_up() {
    local dir=$1 broker=$2
    mkdir -p "$dir"
    chmod 755 "$dir"
    trap stack_down EXIT
    trap 'exit 130' INT TERM
    if [ -n "${REDIS_URL:-}" ]; then say "redis      $REDIS_URL (given)"
    elif [ "${ONSALE_REDIS_CLUSTER:-0}" = 1 ]; then start_redis_cluster "$dir"
    else start_redis "$dir"; fi
    if [ -n "${DATABASE_URL:-}" ]; then say "postgres   $DATABASE_URL (given)"; else start_postgres "$dir"; fi
    if [ -n "${KAFKA_BROKERS:-}" ]; then say "broker     $KAFKA_BROKERS (given)"; else start_broker "$dir" "$broker"; fi
}
