#!/opt/hacontrol/bin/python
"""Container health probe: `hacontrol-health` (controller) or `hacontrol-health agent`.

A controller is healthy when /v1/health/ready answers 200 (it knows a leader and is caught
up); an agent when its own /v1/health answers. Neither needs the management token. When the
entrypoint wrote TLS files (`$HACONTROL_RUN_DIR/tls/ca.pem`), the probe speaks HTTPS and
checks the certificate against that CA.
"""

import os
import ssl
import sys
import urllib.request


def main() -> int:
    role = sys.argv[1] if len(sys.argv) > 1 else "server"
    ca = os.path.join(os.environ.get("HACONTROL_RUN_DIR", "/run/hacontrol"), "tls", "ca.pem")
    context = ssl.create_default_context(cafile=ca) if os.path.exists(ca) else None
    scheme = "https" if context is not None else "http"
    if role == "agent":
        port = os.environ.get("HACONTROL_AGENT_PORT", "8300")
        url = f"{scheme}://127.0.0.1:{port}/v1/health"
    else:
        port = os.environ.get("HACONTROL_API_BIND", "0.0.0.0:8000").rsplit(":", 1)[1]
        url = f"{scheme}://127.0.0.1:{port}/v1/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
