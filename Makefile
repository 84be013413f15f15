PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: bytecode run test test-alerts test-browser test-overload test-ops test-scaling lint fuzz bench bench-agent bench-scheduler bench-snapshot bench-snapshot-compare bench-compare chaos chaos-power chaos-smoke system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Network-namespace chaos tests need iproute2 and nftables, the power-loss filesystem needs
# libfuse3 (fuse3 brings fusermount3), the UI's browser tests Debian's chromium (Playwright drives it; it never downloads a browser), the systemd units' test systemd-analyze (installed,
# never booted); install them when we may.
SYSTEM_TOOLS := ip nft fusermount3 systemd-analyze chromium
SYSTEM_PKGS := iproute2 nftables fuse3 libfuse3-3 systemd chromium
system-deps:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || missing=1; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $(SYSTEM_PKGS)"; \
		apt-get install -y -q $(SYSTEM_PKGS) >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null && apt-get install -y -q $(SYSTEM_PKGS) >/dev/null); \
	else echo "note: ip/nft/fusermount3/systemd-analyze/chromium missing and not root: namespace, power-loss and unit-verify and browser tests will skip"; fi

# `bytecode`: the editable install's bytecode, which pip does not write. With
# PYTHONDONTWRITEBYTECODE set (as on this machine) every replica, agent and CLI compiled the
# package afresh at each start: a quarter of a replica's start-up CPU (1.5 -> 1.1 s).
# compileall writes only what changed.
bytecode: $(STAMP)
	$(PY) -m compileall -q hacontrol chaos bench

run: $(STAMP) bytecode
	$(VENV)/bin/hacontrol dev

test: $(STAMP) system-deps bytecode
	$(VENV)/bin/ruff check hacontrol tests chaos bench
	$(PY) -m pytest -q tests

# The web UI in Chromium against a dev cluster: every page, every action, a read-only token
# (tests/integration/test_ui_browser.py, ~1.5 min); screenshots land in test-artifacts/ui/.
# `make test` runs its smoke only.
test-browser: $(STAMP) system-deps bytecode
	$(PY) -m pytest -q -m browser tests/integration/test_ui_browser.py

# Alerts on a real cluster with a real webhook receiver (tests/integration/test_alerts.py,
# ~2 min): an allocation killed until it flaps, an agent killed (node_down), a quota
# filled, the leader killed during a delivery (no loss, no flood), an exec sink, the
# health score, two replicas of three killed (no_leader sent by the one left, resolved when
# they are back). `make test` runs the quota and leader-kill smoke only.
test-alerts: $(STAMP) bytecode
	$(PY) -m pytest -q -m alerts tests/integration/test_alerts.py

# Two agents given OVERLOAD_N allocations each at once (tests/integration/test_overload.py):
# all run, no node is marked down, nothing is lost, one process per allocation; prints the
# time to converge. `make test` runs the same test with 100 per agent.
OVERLOAD_N ?= 1000
test-overload: $(STAMP) bytecode
	HACONTROL_OVERLOAD_N=$(OVERLOAD_N) $(PY) -m pytest -q -s tests/integration/test_overload.py

# Membership changes of real replicas under continuous writes (tests/integration/
# test_membership.py): grow 3 -> 5 and shrink back, replace a killed replica, lose a minority
# of five, restart over stale --peer flags, one CLI client following the replacement of
# c1..c3 by c4..c6. `make test` runs the join/remove smoke only.
# Rolling upgrades (tests/integration/test_upgrade.py): UPGRADE_ROUNDS rolling restarts of
# every replica (UPGRADE_REPLICAS of them) then every agent under client load; zero failed
# requests, zero allocation restarts; prints the requests' latencies. Then `hacontrol dev`
# with five replicas, one killed and restarted. `make test` runs one round on three replicas
# and dev with three. A restore of RESTORE_JOBS jobs while a client writes and reads
# (tests/integration/test_restore_under_load.py): no request waits 2.5 s; `make test`
# restores 8,000.
RESTORE_JOBS ?= 10000
UPGRADE_ROUNDS ?= 3
UPGRADE_REPLICAS ?= 5
test-ops: $(STAMP) bytecode
	HACONTROL_UPGRADE_ROUNDS=$(UPGRADE_ROUNDS) HACONTROL_UPGRADE_REPLICAS=$(UPGRADE_REPLICAS) \
		HACONTROL_DEV_REPLICAS=5 \
		$(PY) -m pytest -q -s tests/integration/test_upgrade.py tests/integration/test_dev_supervise.py
	HACONTROL_TEST_OPS=1 $(PY) -m pytest -q -s tests/integration/test_membership.py
	HACONTROL_RESTORE_JOBS=$(RESTORE_JOBS) $(PY) -m pytest -q -s \
		tests/integration/test_restore_under_load.py

# Scaling on a metric with real workers draining a real queue (tests/integration/
# test_metric_scaling.py): up, drained, down; then the same through a leader failover, and
# the push route's cost next to a replicated write's (bench/metric_push.py). `make test`
# runs the first scenario only.
test-scaling: $(STAMP) bytecode
	HACONTROL_TEST_SCALING=1 $(PY) -m pytest -q -s tests/integration/test_metric_scaling.py

lint: $(STAMP)
	$(VENV)/bin/ruff check hacontrol tests chaos bench
	$(VENV)/bin/mypy

# Fuzz every API route (schemathesis, from GET /v1/openapi.json) against a 3-replica cluster:
# FUZZ_EXAMPLES requests per route and mode, failures shrunk to a minimal request; and the
# state machine's apply with APPLY_EXAMPLES garbled commands. `make test` runs the same
# tests in a short form (a few examples, well under a minute).
FUZZ_EXAMPLES ?= 200
APPLY_EXAMPLES ?= 3000
fuzz: $(STAMP) bytecode
	HACONTROL_APPLY_EXAMPLES=$(APPLY_EXAMPLES) $(PY) -m pytest -q tests/unit/test_apply_properties.py
	HACONTROL_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/integration/test_api_fuzz.py

bench: $(STAMP) bytecode
	$(PY) bench/controllers.py

bench-agent: $(STAMP) bytecode
	$(PY) bench/agent.py

bench-scheduler: $(STAMP) bytecode
	$(PY) bench/scheduler.py

# Snapshot save and restore times and sizes at SNAPSHOT_JOBS jobs, with the write pause a
# restore causes (bench/snapshot.py).
SNAPSHOT_JOBS ?= 10000
bench-snapshot: $(STAMP) bytecode
	$(PY) bench/snapshot.py --jobs $(SNAPSHOT_JOBS)

# The restore with and without raft/long_apply.py (elections, times, longest write and read
# pauses), alternating, medians; with SNAPSHOT_AGAINST=DIR, against the code in DIR instead
# (e.g. `mkdir DIR && git archive COMMIT | tar -x -C DIR`).
SNAPSHOT_AGAINST ?=
bench-snapshot-compare: $(STAMP) bytecode
	$(PY) bench/snapshot.py --jobs $(SNAPSHOT_JOBS) --compare 3 \
		$(if $(SNAPSHOT_AGAINST),--against $(SNAPSHOT_AGAINST))

# hacontrol next to etcd, supervisord, circus and PM2 in one run (bench/README.md). Peers are
# installed into ~/.cache/hacontrol-bench, never into the project; e.g.
# make bench-compare BENCH_ARGS="--quick --profile"
BENCH_STAMP := $(VENV)/.bench-installed
BENCH_ARGS ?=
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench-compare: $(BENCH_STAMP) bytecode
	$(PY) -m bench.compare $(BENCH_ARGS)

# The standard chaos set: every nemesis, then every planted fault (30-50 minutes).
chaos: $(STAMP) system-deps bytecode
	$(PY) -m chaos.standard --backend netns

# Only the power-loss nemeses and the durability faults they must catch (replicas on FUSE
# power-loss mounts, chaos/lazyfs; 5-10 minutes).
chaos-power: $(STAMP) system-deps bytecode
	$(PY) -m chaos.standard --backend netns --power-only

chaos-smoke: $(STAMP) system-deps bytecode
	$(PY) -m pytest -q tests/integration/test_chaos_smoke.py tests/integration/test_chaos_powerloss_fs.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# The compose cluster (compose.yaml, docs/deploy.md). compose-test installs and starts a
# Docker engine when there is none, and builds the image without a registry.
.PHONY: compose-up compose-down compose-test
compose-up: $(STAMP)
	bash deploy/compose-test.sh up

compose-down:
	bash deploy/compose-test.sh down

compose-test: $(STAMP)
	bash deploy/compose-test.sh test
