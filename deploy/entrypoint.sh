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
# agent:  HACONTROL_CONTROLLERS controller API URLs, comma separated (required)
#         HACONTROL_NODE_NAME   node name (default: the container's hostname, so that
#                               `--scale agent=N` gives every agent its own name)
#         HACONTROL_TOKEN (or _FILE), HACONTROL_AGENT_PORT (health, default 8300),
#         HACONTROL_AGENT_CPU, HACONTROL_AGENT_MEMORY_MB, HACONTROL_AGENT_DATA_DIR
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
    set -- --id "${HACONTROL_ID:-$(hostname)}" \
        --data-dir "${HACONTROL_DATA_DIR:-/var/lib/hacontrol}" \
        --raft "$HACONTROL_RAFT" --api "${HACONTROL_API_BIND:-0.0.0.0:8000}" \
        --secret-file "$run_dir/secret" --token-file "$run_dir/token" \
        --log-level "$log_level" --insecure-http "$@"
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
    secret_file HACONTROL_TOKEN "$run_dir/token"
    set -- --name "${HACONTROL_NODE_NAME:-$(hostname)}" \
        --data-dir "${HACONTROL_AGENT_DATA_DIR:-/var/lib/hacontrol-agent}" \
        --controllers "$HACONTROL_CONTROLLERS" --token-file "$run_dir/token" \
        --port "${HACONTROL_AGENT_PORT:-8300}" --bind 0.0.0.0 \
        --advertise "http://$(hostname):${HACONTROL_AGENT_PORT:-8300}" \
        --log-level "$log_level" "$@"
    [ -z "${HACONTROL_AGENT_CPU:-}" ] || set -- "$@" --cpu "$HACONTROL_AGENT_CPU"
    [ -z "${HACONTROL_AGENT_MEMORY_MB:-}" ] || set -- "$@" --memory-mb "$HACONTROL_AGENT_MEMORY_MB"
    unset HACONTROL_CLUSTER_SECRET HACONTROL_TOKEN
    exec hacontrol agent "$@"
    ;;
*)
    exec hacontrol "$@"
    ;;
esac
