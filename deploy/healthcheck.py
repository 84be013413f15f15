#!/opt/hacontrol/bin/python
"""Container health probe: `hacontrol-health` (controller) or `hacontrol-health agent`.

A controller is healthy when /v1/health/ready answers 200 (it knows a leader and is caught
up); an agent when its own /v1/health answers. Neither needs the management token.
"""

import os
import sys
import urllib.request


def main() -> int:
    role = sys.argv[1] if len(sys.argv) > 1 else "server"
    if role == "agent":
        url = f"http://127.0.0.1:{os.environ.get('HACONTROL_AGENT_PORT', '8300')}/v1/health"
    else:
        port = os.environ.get("HACONTROL_API_BIND", "0.0.0.0:8000").rsplit(":", 1)[1]
        url = f"http://127.0.0.1:{port}/v1/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
