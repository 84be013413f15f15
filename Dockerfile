# One image for both roles: `server` (a controller replica) and `agent` (a node agent).
#
#   docker build -t hacontrol .                       # wheels built in the builder stage
#   docker build --build-arg BASE_IMAGE=hacontrol-base:bookworm -t hacontrol .
#
# With wheels in deploy/wheels/ (`pip wheel . -w deploy/wheels`), the build installs from
# them alone and needs no package index; deploy/compose-test.sh builds that way.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
# Labelled so that the build script can remove this stage once the image is built.
LABEL org.hacontrol.stage=builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY deploy/wheels/ /wheels/
COPY pyproject.toml README.md /src/
COPY hacontrol/ /src/hacontrol/
RUN python3 -m venv /opt/hacontrol \
 && if ls /wheels/hacontrol-*.whl >/dev/null 2>&1; then \
        /opt/hacontrol/bin/pip install --no-index --find-links /wheels hacontrol; \
    else \
        /opt/hacontrol/bin/pip wheel /src -w /wheels \
        && /opt/hacontrol/bin/pip install --no-index --find-links /wheels hacontrol; \
    fi \
 && /opt/hacontrol/bin/hacontrol --version

FROM ${BASE_IMAGE}
ENV PATH=/opt/hacontrol/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=builder /opt/hacontrol /opt/hacontrol
COPY deploy/entrypoint.sh /usr/local/bin/hacontrol-entrypoint
COPY deploy/healthcheck.py /usr/local/bin/hacontrol-health
COPY deploy/intro.py /usr/local/bin/hacontrol-intro
# The controller runs as this user; the agent runs as root so that it may run jobs as
# whatever user they need. The data directories exist in the image with the right owner,
# so a named volume mounted there starts out writable by the controller.
RUN groupadd --system --gid 10001 hacontrol \
 && useradd --system --uid 10001 --gid hacontrol --home-dir /var/lib/hacontrol \
        --shell /usr/sbin/nologin hacontrol \
 && mkdir -p /var/lib/hacontrol /var/lib/hacontrol-agent /var/lib/hacontrol-intro /run/hacontrol \
 && chown hacontrol:hacontrol /var/lib/hacontrol /run/hacontrol \
 && chmod 0700 /var/lib/hacontrol /var/lib/hacontrol-intro \
 && chmod 0755 /usr/local/bin/hacontrol-entrypoint /usr/local/bin/hacontrol-health \
        /usr/local/bin/hacontrol-intro
USER hacontrol
WORKDIR /var/lib/hacontrol
# Raft, the API (controllers) and the agent's health port.
EXPOSE 7000 8000 8300
# No token needed: /v1/health/ready is open to probes. `hacontrol-health agent` for agents.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 CMD ["hacontrol-health"]
# Run with an init (compose `init: true`, `docker run --init`) so signals reach hacontrol
# and zombies of agent jobs are reaped.
ENTRYPOINT ["hacontrol-entrypoint"]
CMD ["server"]
