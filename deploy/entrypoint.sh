#!/bin/sh
# Entry point of the hacontrol image: `server`, `agent`, or any hacontrol command line.
#
# server: HACONTROL_RAFT        advertised Raft address HOST:PORT (required)
#         HACONTROL_ID          replica id (default: the container's hostname)
#         HACONTROL_API_BIND    API listen address (default 0.0.0.0:8000)
#         HACONTROL_PEERS       other replicas, space separated ID=HOST:PORT=http://HOST:PORT
#         HACONTROL_DATA_DIR    Raft journal and snapshots (default /var/lib/hacontrol)
#         HACONTROL_CLUSTER_SECRET (or _FILE) and HACONTROL_TOKEN (or _FILE)
#         HACONTROL_SERVER_ARGS extra arguments, split on spaces
#         HACONTROL_TLS_CA, HACONTROL_TLS_CERT, HACONTROL_TLS_KEY: the cluster's CA, this
#                               replica's certificate and key, each base64 of the PEM (or
#                               _FILE: a PEM file); without them the server refuses to start
#                               unless HACONTROL_INSECURE_HTTP=1 (plain HTTP)
# agent:  HACONTROL_CONTROLLERS controller API URLs, comma separated (required)
#         HACONTROL_NODE_NAME   node name (default: the container's hostname, so that
#                               `--scale agent=N` gives every agent its own name)
#         HACONTROL_INTRO_TOKEN (or _FILE): an introduction token for this node; without
#                               one, the agent claims one from HACONTROL_INTRO_DIR (default
#                               /var/lib/hacontrol-intro, a volume the intro step fills),
#                               waiting up to HACONTROL_INTRO_WAIT_S (120); none needed
#                               once the node holds its credential (a restart)
#         HACONTROL_TOKEN (or _FILE): the old way, a token that may write nodes
#         HACONTROL_AGENT_PORT (health, default 8300),
#         HACONTROL_AGENT_CPU, HACONTROL_AGENT_MEMORY_MB, HACONTROL_AGENT_DATA_DIR
#         HACONTROL_TLS_CA, HACONTROL_TLS_CERT, HACONTROL_TLS_KEY as for the server, with the
#                               agent's certificate: mutual TLS with the controllers
# intro:  one-shot: with the management token (HACONTROL_TOKEN or _FILE), once the
#         controllers (HACONTROL_CONTROLLERS) answer, put HACONTROL_AGENTS introduction
#         tokens (ttl HACONTROL_INTRO_TTL_S, 600) into HACONTROL_INTRO_DIR/pool, one file
#         each, for agents to claim; HACONTROL_TLS_CA(_FILE) to trust the controllers.
#
# Every secret can come as a file (NAME_FILE, e.g. a compose secret under /run/secrets), so
# that no secret value is in the container's environment (`docker inspect` shows it).
set -eu

die() { echo "hacontrol-entrypoint: $*" >&2; exit 64; }

# secret_file NAME DEST: write $NAME (or the file named by $NAME_FILE) to DEST, mode 0600.
secret_file() {
    eval "value=\${$1:-}"
    eval "from=\${$1_FILE:-}"
    if [ -n "$from" ]; then
        [ -r "$from" ] || die "$1_FILE=$from is not readable"
        value=$(cat "$from")
    fi
    [ -n "$value" ] || die "$1 (or $1_FILE) must be set"
    (umask 077 && printf '%s' "$value" > "$2")
    unset value from
}

# tls_files: when HACONTROL_TLS_CA (or _FILE) is set, write the CA, certificate and key
# to $run_dir/tls (the key 0600) and set tls_args to the matching flags; else tls_args="".
tls_files() {
    tls_args=""
    [ -n "${HACONTROL_TLS_CA:-}${HACONTROL_TLS_CA_FILE:-}" ] || return 0
    mkdir -p "$run_dir/tls"
    chmod 700 "$run_dir/tls"
    for part in CA CERT KEY; do
        eval "value=\${HACONTROL_TLS_$part:-}"
        eval "from=\${HACONTROL_TLS_${part}_FILE:-}"
        dest="$run_dir/tls/$(echo "$part" | tr 'A-Z' 'a-z').pem"
        if [ -n "$from" ]; then
            [ -r "$from" ] || die "HACONTROL_TLS_${part}_FILE=$from is not readable"
            (umask 077 && cat "$from" > "$dest")
        else
            [ -n "$value" ] || die "HACONTROL_TLS_$part (or _FILE) must be set with HACONTROL_TLS_CA"
            (umask 077 && printf '%s' "$value" | base64 -d > "$dest") ||
                die "HACONTROL_TLS_$part is not base64"
        fi
    done
    unset value from HACONTROL_TLS_CA HACONTROL_TLS_CERT HACONTROL_TLS_KEY
    tls_args="--tls-ca $run_dir/tls/ca.pem --tls-cert $run_dir/tls/cert.pem --tls-key $run_dir/tls/key.pem"
}

# claim_intro DEST: take one introduction token from the pool the intro step fills (a
# rename, so two agents never take the same), copy it to DEST (0600), drop the claimed file.
claim_intro() {
    pool=${HACONTROL_INTRO_DIR:-/var/lib/hacontrol-intro}/pool
    mine="${HACONTROL_INTRO_DIR:-/var/lib/hacontrol-intro}/claimed-$(hostname)"
    if [ -s "$1" ]; then return 0; fi  # claimed before a restart, not exchanged yet
    tries=0
    while [ "$tries" -lt "$((${HACONTROL_INTRO_WAIT_S:-120} * 5))" ]; do
        for f in "$pool"/*; do
            [ -f "$f" ] || continue
            if mv "$f" "$mine" 2>/dev/null; then
                (umask 077 && cat "$mine" > "$1")
                rm -f "$mine"
                return 0
            fi
        done
        sleep 0.2
        tries=$((tries + 1))
    done
    die "no introduction token in $pool after ${HACONTROL_INTRO_WAIT_S:-120} s (is the intro step done?)"
}

run_dir=${HACONTROL_RUN_DIR:-/run/hacontrol}
log_level=${HACONTROL_LOG_LEVEL:-info}
role=${1:-server}

case "$role" in
server)
    shift || true
    [ -n "${HACONTROL_RAFT:-}" ] || die "HACONTROL_RAFT (the advertised HOST:PORT) must be set"
    mkdir -p "$run_dir"
    secret_file HACONTROL_CLUSTER_SECRET "$run_dir/secret"
    secret_file HACONTROL_TOKEN "$run_dir/token"
    tls_files
    if [ -z "$tls_args" ] && [ "${HACONTROL_INSECURE_HTTP:-}" = 1 ]; then
        tls_args="--insecure-http"
    fi
    # shellcheck disable=SC2086  # tls_args holds whole flags; paths have no spaces
    set -- --id "${HACONTROL_ID:-$(hostname)}" \
        --data-dir "${HACONTROL_DATA_DIR:-/var/lib/hacontrol}" \
        --raft "$HACONTROL_RAFT" --api "${HACONTROL_API_BIND:-0.0.0.0:8000}" \
        --secret-file "$run_dir/secret" --token-file "$run_dir/token" \
        --log-level "$log_level" $tls_args "$@"
    for peer in ${HACONTROL_PEERS:-}; do
        set -- "$@" --peer "$peer"
    done
    # shellcheck disable=SC2086  # word splitting is the point
    set -- "$@" ${HACONTROL_SERVER_ARGS:-}
    unset HACONTROL_CLUSTER_SECRET HACONTROL_TOKEN
    exec hacontrol server "$@"
    ;;
agent)
    shift || true
    [ -n "${HACONTROL_CONTROLLERS:-}" ] || die "HACONTROL_CONTROLLERS must be set"
    mkdir -p "$run_dir"
    chmod 700 "$run_dir"
    data_dir=${HACONTROL_AGENT_DATA_DIR:-/var/lib/hacontrol-agent}
    join_args=""
    if [ -s "$data_dir/node-credential" ]; then
        :  # joined before: its credential is all it needs
    elif [ -n "${HACONTROL_INTRO_TOKEN:-}${HACONTROL_INTRO_TOKEN_FILE:-}" ]; then
        secret_file HACONTROL_INTRO_TOKEN "$run_dir/intro"
        join_args="--intro-token-file $run_dir/intro"
    elif [ -n "${HACONTROL_TOKEN:-}${HACONTROL_TOKEN_FILE:-}" ]; then
        secret_file HACONTROL_TOKEN "$run_dir/token"
        join_args="--token-file $run_dir/token"
    else
        claim_intro "$run_dir/intro"
        join_args="--intro-token-file $run_dir/intro"
    fi
    tls_files
    scheme=http
    [ -z "$tls_args" ] || scheme=https
    # shellcheck disable=SC2086  # tls_args holds whole flags; paths have no spaces
    set -- --name "${HACONTROL_NODE_NAME:-$(hostname)}" \
        --data-dir "${HACONTROL_AGENT_DATA_DIR:-/var/lib/hacontrol-agent}" \
        --controllers "$HACONTROL_CONTROLLERS" $join_args \
        --port "${HACONTROL_AGENT_PORT:-8300}" --bind 0.0.0.0 \
        --advertise "$scheme://$(hostname):${HACONTROL_AGENT_PORT:-8300}" \
        --log-level "$log_level" $tls_args "$@"
    [ -z "${HACONTROL_AGENT_CPU:-}" ] || set -- "$@" --cpu "$HACONTROL_AGENT_CPU"
    [ -z "${HACONTROL_AGENT_MEMORY_MB:-}" ] || set -- "$@" --memory-mb "$HACONTROL_AGENT_MEMORY_MB"
    unset HACONTROL_CLUSTER_SECRET HACONTROL_TOKEN HACONTROL_INTRO_TOKEN
    exec hacontrol agent "$@"
    ;;
intro)
    shift || true
    [ -n "${HACONTROL_CONTROLLERS:-}" ] || die "HACONTROL_CONTROLLERS must be set"
    mkdir -p "$run_dir"
    chmod 700 "$run_dir"
    secret_file HACONTROL_TOKEN "$run_dir/token"
    ca=""
    if [ -n "${HACONTROL_TLS_CA_FILE:-}" ]; then
        ca=$HACONTROL_TLS_CA_FILE
    elif [ -n "${HACONTROL_TLS_CA:-}" ]; then
        ca="$run_dir/ca.pem"
        printf '%s' "$HACONTROL_TLS_CA" | base64 -d > "$ca" || die "HACONTROL_TLS_CA is not base64"
    fi
    unset HACONTROL_TOKEN HACONTROL_TLS_CA
    exec hacontrol-intro --controllers "$HACONTROL_CONTROLLERS" --token-file "$run_dir/token" \
        --ca "$ca" --count "${HACONTROL_AGENTS:-2}" --ttl "${HACONTROL_INTRO_TTL_S:-600}" \
        --dir "${HACONTROL_INTRO_DIR:-/var/lib/hacontrol-intro}"
    ;;
*)
    exec hacontrol "$@"
    ;;
esac
