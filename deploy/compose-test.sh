#!/usr/bin/env bash
# Build and run the compose cluster on a machine that may have no Docker at all.
#
#   deploy/compose-test.sh prepare   engine running, base image, wheels, hacontrol image
#   deploy/compose-test.sh up        prepare, write secrets, start compose.yaml, wait ready
#   deploy/compose-test.sh down      stop and remove the cluster, its network and volumes
#   deploy/compose-test.sh test      prepare, then deploy/compose_test.py and a chaos run
#                                    against throw-away clusters; leaves nothing behind
#
# Every step reuses what exists: a running engine, the base image, the built image's cache.
# With no engine it installs Debian's docker.io and docker-compose (root and apt-get
# needed) and starts plain `dockerd` in the background, its log in $HACONTROL_CACHE.
# With no registry reachable it makes the base image with debootstrap from the Debian
# mirror apt is configured with, and builds the image from wheels prepared here.
#
# Environment: HACONTROL_BASE_IMAGE (skip debootstrap, e.g. python:3.11-slim-bookworm when a
# registry is reachable), HACONTROL_IMAGE (default hacontrol:local), HACONTROL_CACHE
# (default /var/tmp/hacontrol-compose), PYTHON (default .venv/bin/python), HACONTROL_SOURCE
# (head: the committed sources, the default; worktree: the files as they are now).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CACHE=${HACONTROL_CACHE:-/var/tmp/hacontrol-compose}
BASE_TAG=hacontrol-base:bookworm
export HACONTROL_IMAGE=${HACONTROL_IMAGE:-hacontrol:local}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
ENV_DIR=${HACONTROL_ENV_DIR:-$ROOT/.compose}
PROJECT=${COMPOSE_PROJECT_NAME:-hacontrol}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'compose-test: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
    [ "$(id -u)" = 0 ] && have apt-get || die "need $* but cannot install it (not root, or no apt-get)"
    say "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "$@" >"$CACHE/apt.log" 2>&1 ||
        { apt-get update -q >>"$CACHE/apt.log" 2>&1 && apt-get install -y -q "$@" >>"$CACHE/apt.log" 2>&1; } ||
        die "apt-get install $* failed; see $CACHE/apt.log"
}

engine_up() { docker info >/dev/null 2>&1; }

ensure_engine() {
    mkdir -p "$CACHE"
    local need=()
    have dockerd || need+=(docker.io)
    if ! docker compose version >/dev/null 2>&1 && ! have docker-compose; then
        need+=(docker-compose)
    fi
    [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
    if engine_up; then return 0; fi
    have dockerd || die "no dockerd after installing docker.io"
    say "starting dockerd (log: $CACHE/dockerd.log)"
    # setsid: the engine outlives this script and is reused by the next run.
    setsid dockerd >>"$CACHE/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 120); do
        engine_up && return 0
        kill -0 $! 2>/dev/null || break
        sleep 0.5
    done
    tail -20 "$CACHE/dockerd.log" >&2 || true
    die "the Docker engine did not come up"
}

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -f "$ROOT/compose.yaml" -p "$PROJECT" "$@"
    else
        docker-compose -f "$ROOT/compose.yaml" -p "$PROJECT" "$@"
    fi
}

debian_mirror() {
    local url=""
    if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
        url=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources)
    fi
    if [ -z "$url" ] && [ -f /etc/apt/sources.list ]; then
        url=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list)
    fi
    echo "${url:-http://deb.debian.org/debian}"
}

ensure_base_image() {
    if [ -n "${HACONTROL_BASE_IMAGE:-}" ]; then
        BASE_TAG=$HACONTROL_BASE_IMAGE
        return 0
    fi
    docker image inspect "$BASE_TAG" >/dev/null 2>&1 && return 0
    have debootstrap || apt_install debootstrap
    local rootfs="$CACHE/rootfs"
    if [ ! -x "$rootfs/usr/bin/python3" ]; then
        local mirror
        mirror=$(debian_mirror)
        say "debootstrap bookworm from $mirror (log: $CACHE/debootstrap.log)"
        rm -rf "$rootfs.tmp"
        debootstrap --variant=minbase --include=python3,python3-venv bookworm \
            "$rootfs.tmp" "$mirror" >"$CACHE/debootstrap.log" 2>&1 ||
            die "debootstrap failed; see $CACHE/debootstrap.log"
        rm -rf "$rootfs.tmp"/var/cache/apt/archives/*.deb "$rootfs.tmp"/var/lib/apt/lists/*
        mv "$rootfs.tmp" "$rootfs"
    fi
    say "importing $rootfs as $BASE_TAG"
    tar -C "$rootfs" -c . | docker import -c 'CMD ["python3"]' - "$BASE_TAG" >/dev/null
}

ensure_wheels() {
    [ -x "$PYTHON" ] || die "no $PYTHON: run 'make' targets, or set PYTHON"
    local dir="$ROOT/deploy/wheels"
    mkdir -p "$dir"
    rm -f "$dir"/hacontrol-*.whl
    say "building wheels into deploy/wheels"
    # From a copy of the sources, so that setuptools' build/ and egg-info land outside the
    # work tree. The committed sources by default (the image matches a commit, and edits in
    # progress stay out); HACONTROL_SOURCE=worktree takes the files as they are.
    local src="$CACHE/src"
    rm -rf "$src" && mkdir -p "$src"
    if [ "${HACONTROL_SOURCE:-head}" = head ] && git -C "$ROOT" rev-parse -q HEAD >/dev/null 2>&1; then
        git -C "$ROOT" archive HEAD pyproject.toml README.md hacontrol | tar -C "$src" -x
    else
        cp -r "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/hacontrol" "$src/"
        find "$src" -name __pycache__ -prune -exec rm -rf {} +
    fi
    "$PYTHON" -m pip wheel -q --disable-pip-version-check "$src" -w "$dir" >"$CACHE/wheels.log" 2>&1 ||
        die "pip wheel failed; see $CACHE/wheels.log"
}

build_image() {
    say "building $HACONTROL_IMAGE on $BASE_TAG"
    # Plain `docker build` (one build, modest CPU); the compose file's build section is
    # for users who run `docker compose build` themselves.
    DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE_IMAGE=$BASE_TAG" \
        -t "$HACONTROL_IMAGE" "$ROOT" >"$CACHE/build.log" 2>&1 ||
        { tail -30 "$CACHE/build.log" >&2; die "docker build failed; see $CACHE/build.log"; }
    # The classic builder keeps the builder stage as an untagged image; drop it.
    docker image prune -f --filter label=org.hacontrol.stage=builder >/dev/null || true
}

prepare() {
    ensure_engine
    ensure_base_image
    ensure_wheels
    build_image
}

# write_tls: a CA and the server, agent and cli certificates in $ENV_DIR/tls (made once).
# The CA key stays here.
write_tls() {
    local dir="$ENV_DIR/tls" role
    if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca-key.pem" ]; then
        say "making a CA and certificates in ${dir#"$ROOT"/}/"
        rm -rf "$dir" && mkdir -p "$dir" && chmod 700 "$dir"
        "$PYTHON" -m hacontrol tls ca create --dir "$dir" --common-name "hacontrol compose CA" >/dev/null
        for role in server agent cli; do
            "$PYTHON" -m hacontrol tls cert create "--$role" --ca "$dir/ca.pem" \
                --ca-key "$dir/ca-key.pem" --dir "$dir" --host c1 --host c2 --host c3 >/dev/null
        done
    fi
}

# write_env: the cluster secret and the management token (made once, kept in
# $ENV_DIR/cluster-secret and $ENV_DIR/token, 0600, for the operator), the TLS files, then
# what compose.yaml reads: the secrets under $ENV_DIR/secrets (owned by the user that reads
# each in its container, 0400) and the env files, which hold no secret
# (chaos/cluster/compose_files.py).
write_env() {
    mkdir -p "$ENV_DIR"
    chmod 700 "$ENV_DIR"
    (umask 077
     # A cluster set up when secrets came in env files keeps its secret and token.
     if [ ! -s "$ENV_DIR/cluster-secret" ] && [ -f "$ENV_DIR/controller.env" ] &&
         grep -q '^HACONTROL_CLUSTER_SECRET=hcraft[12]\.' "$ENV_DIR/controller.env"; then
         sed -n 's/^HACONTROL_CLUSTER_SECRET=//p' "$ENV_DIR/controller.env" > "$ENV_DIR/cluster-secret"
         sed -n 's/^HACONTROL_TOKEN=//p' "$ENV_DIR/controller.env" > "$ENV_DIR/token"
     fi
     if [ ! -s "$ENV_DIR/cluster-secret" ] || [ ! -s "$ENV_DIR/token" ]; then
         say "writing a new cluster secret and management token to ${ENV_DIR#"$ROOT"/}/"
         od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > "$ENV_DIR/token"
         # The cluster secret's format is hacontrol.raft.keys': hcraft2.<salt>.<key>.
         printf 'hcraft2.%s.%s\n' "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" \
             "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" > "$ENV_DIR/cluster-secret"
     fi)
    write_tls
    "$PYTHON" -m chaos.cluster.compose_files "$ENV_DIR" --secret-file "$ENV_DIR/cluster-secret" \
        --token-file "$ENV_DIR/token" --tls-dir "$ENV_DIR/tls" --image "$HACONTROL_IMAGE" ||
        die "could not write the compose secrets into ${ENV_DIR#"$ROOT"/}/secrets"
}

wait_ready() {
    local deadline=$((SECONDS + ${1:-90})) port ok
    while [ $SECONDS -lt $deadline ]; do
        ok=0
        for port in "${HACONTROL_C1_PORT:-8101}" "${HACONTROL_C2_PORT:-8102}" "${HACONTROL_C3_PORT:-8103}"; do
            "$PYTHON" - "$port" "$ENV_DIR/tls/ca.pem" <<'PY' && ok=$((ok + 1))
import ssl, sys, urllib.request
try:
    urllib.request.urlopen(f"https://127.0.0.1:{sys.argv[1]}/v1/health/ready", timeout=2,
                           context=ssl.create_default_context(cafile=sys.argv[2]))
except Exception:
    sys.exit(1)
PY
        done
        [ $ok -eq 3 ] && return 0
        sleep 1
    done
    compose ps >&2 || true
    compose logs --tail 30 >&2 || true
    die "the cluster was not ready in time"
}

cmd_up() {
    prepare
    write_env
    export HACONTROL_ENV_DIR=$ENV_DIR
    say "starting the cluster (project $PROJECT)"
    compose up -d --no-build >&2
    wait_ready 90
    cat <<MSG
hacontrol is up: controllers on https://127.0.0.1:${HACONTROL_C1_PORT:-8101}, :${HACONTROL_C2_PORT:-8102}, :${HACONTROL_C3_PORT:-8103}
  export HACONTROL_ADDR=https://127.0.0.1:${HACONTROL_C1_PORT:-8101},https://127.0.0.1:${HACONTROL_C2_PORT:-8102},https://127.0.0.1:${HACONTROL_C3_PORT:-8103}
  export HACONTROL_TOKEN=\$(cat ${ENV_DIR#"$ROOT"/}/token)
  export HACONTROL_CACERT=${ENV_DIR#"$ROOT"/}/tls/ca.pem HACONTROL_CLIENT_CERT=${ENV_DIR#"$ROOT"/}/tls/cli.pem HACONTROL_CLIENT_KEY=${ENV_DIR#"$ROOT"/}/tls/cli-key.pem
  hacontrol status; hacontrol node list
stop it with: make compose-down (removes the volumes too)
MSG
}

cmd_down() {
    if ! engine_up; then
        say "no Docker engine running: nothing to take down"
        return 0
    fi
    # Compose reads the env files and checks the secret files even to take the cluster
    # down; any content will do.
    if [ ! -f "$ENV_DIR/controller.env" ] || [ ! -f "$ENV_DIR/agent.env" ] ||
        [ ! -d "$ENV_DIR/secrets" ]; then
        export HACONTROL_ENV_DIR=$CACHE/empty-env
        mkdir -p "$HACONTROL_ENV_DIR/secrets"
        touch "$HACONTROL_ENV_DIR/controller.env" "$HACONTROL_ENV_DIR/agent.env"
        for f in cluster-secret token intro-token ca.pem server.pem server-key.pem agent.pem \
            agent-key.pem; do
            touch "$HACONTROL_ENV_DIR/secrets/$f"
        done
    else
        export HACONTROL_ENV_DIR=$ENV_DIR
    fi
    compose down -v --remove-orphans -t 10
}

cmd_test() {
    local t0=$SECONDS
    prepare
    say "engine, base image and image ready after $((SECONDS - t0)) s"
    HACONTROL_IMAGE=$HACONTROL_IMAGE "$PYTHON" "$ROOT/deploy/compose_test.py"
    say "compose-test passed in $((SECONDS - t0)) s"
}

case "${1:-test}" in
    prepare) prepare ;;
    up) cmd_up ;;
    down) cmd_down ;;
    test) cmd_test ;;
    *) die "usage: $0 prepare|up|down|test" ;;
esac
