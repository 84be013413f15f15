#!/usr/bin/env bash
# CI step: run `make compose-test` when a Docker engine is running or can be started here,
# and otherwise say why not and succeed. Set HACONTROL_SKIP_COMPOSE=1 to skip on purpose.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

skip() { echo "compose-test skipped: $*"; exit 0; }

[ -z "${HACONTROL_SKIP_COMPOSE:-}" ] || skip "HACONTROL_SKIP_COMPOSE is set"
[ "$(uname -s)" = Linux ] || skip "needs Linux (the script installs and starts dockerd)"
if ! docker info >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        skip "no Docker engine answers and we are not root to start one"
    fi
    if ! command -v dockerd >/dev/null 2>&1 && ! command -v apt-get >/dev/null 2>&1; then
        skip "no dockerd and no apt-get to install it"
    fi
    # An engine needs cgroups and overlay or vfs storage; a container without privileges
    # has no writable cgroup hierarchy.
    if [ ! -w /sys/fs/cgroup ] && [ ! -d /sys/fs/cgroup/memory ]; then
        skip "no writable cgroup hierarchy: dockerd cannot run here"
    fi
fi
exec make compose-test
