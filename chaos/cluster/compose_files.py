"""The files compose.yaml reads: the secrets under ENV_DIR/secrets and the env files.

Secrets reach the containers as compose secrets (read-only bind mounts under /run/secrets),
never as environment variables, which `docker inspect` shows to anyone who may talk to the
engine. A bind mount keeps the host file's owner and mode, so every secret is 0400 and owned
by the user that reads it inside its container: uid 10001 (the image's `hacontrol` user)
for the controllers' secrets, root for the agents' key and the intro step's token. The CA and
the certificates are public (0444). Owners are set with chown when we are root, else by a
throw-away container of the image (root inside, CAP_CHOWN by default).

`make compose-up` (deploy/compose-test.sh) and the chaos suite's compose backend both write
them through `write_compose_files`; `python -m chaos.cluster.compose_files` is the former's
entry point.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

CONTROLLER_UID = 10001  # the image's hacontrol user (Dockerfile)
ROOT_UID = 0
SECRET_NAMES = ("cluster-secret", "token", "intro-token", "server-key.pem", "agent-key.pem")
PUBLIC_NAMES = ("ca.pem", "server.pem", "agent.pem")
OWNERS = {"cluster-secret": CONTROLLER_UID, "token": CONTROLLER_UID,
          "server-key.pem": CONTROLLER_UID, "intro-token": ROOT_UID, "agent-key.pem": ROOT_UID}
IN_CONTAINER = "/run/secrets"


def _chown(paths: list[Path], uid: int, image: str) -> None:
    if not paths:
        return
    if os.geteuid() == 0:
        for p in paths:
            os.chown(p, uid, uid)
        return
    d = paths[0].parent
    subprocess.run(["docker", "run", "--rm", "--user", "0", "--network", "none",
                    "-v", f"{d}:/s", "--entrypoint", "chown", image, f"{uid}:{uid}",
                    *[f"/s/{p.name}" for p in paths]],
                   check=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def write_compose_files(env_dir: Path, secret: str, token: str, tls_dir: Path | None,
                        extra_env: str = "", image: str = "hacontrol:local") -> None:
    """The secrets (`tls_dir` holds ca.pem, server.pem, server-key.pem, agent.pem,
    agent-key.pem; None: no TLS, empty placeholders, and HACONTROL_INSECURE_HTTP=1) and
    controller.env / agent.env with settings only."""
    env_dir.mkdir(parents=True, exist_ok=True)
    env_dir.chmod(0o700)
    sdir = env_dir / "secrets"
    sdir.mkdir(exist_ok=True)
    sdir.chmod(0o755)  # the files' own modes guard them; the daemon must reach them
    values: dict[str, bytes] = {"cluster-secret": secret.encode(), "token": token.encode(),
                                "intro-token": token.encode()}
    for name in ("server-key.pem", "agent-key.pem", *PUBLIC_NAMES):
        values[name] = (tls_dir / name).read_bytes() if tls_dir is not None else b""
    for name, data in values.items():
        path = sdir / name
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        path.chmod(0o444 if name in PUBLIC_NAMES else 0o400)
    for uid in (CONTROLLER_UID, ROOT_UID):
        _chown([sdir / n for n, owner in OWNERS.items() if owner == uid], uid, image)
    if tls_dir is not None:
        controller = (f"HACONTROL_TLS_CA_FILE={IN_CONTAINER}/ca.pem\n"
                      f"HACONTROL_TLS_CERT_FILE={IN_CONTAINER}/server.pem\n"
                      f"HACONTROL_TLS_KEY_FILE={IN_CONTAINER}/server-key.pem\n")
        agent = (f"HACONTROL_TLS_CA_FILE={IN_CONTAINER}/ca.pem\n"
                 f"HACONTROL_TLS_CERT_FILE={IN_CONTAINER}/agent.pem\n"
                 f"HACONTROL_TLS_KEY_FILE={IN_CONTAINER}/agent-key.pem\n")
    else:
        controller, agent = "HACONTROL_INSECURE_HTTP=1\n", ""
    for name, text in (("controller.env", controller + extra_env),
                       ("agent.env", agent + extra_env)):
        path = env_dir / name
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)


def remove_compose_files(env_dir: Path) -> None:
    for name in ("controller.env", "agent.env"):
        (env_dir / name).unlink(missing_ok=True)
    for name in (*SECRET_NAMES, *PUBLIC_NAMES):
        (env_dir / "secrets" / name).unlink(missing_ok=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("env_dir", type=Path)
    p.add_argument("--secret-file", type=Path, required=True)
    p.add_argument("--token-file", type=Path, required=True)
    p.add_argument("--tls-dir", type=Path, default=None)
    p.add_argument("--image", default=os.environ.get("HACONTROL_IMAGE", "hacontrol:local"))
    args = p.parse_args()
    write_compose_files(args.env_dir, args.secret_file.read_text().strip(),
                        args.token_file.read_text().strip(), args.tls_dir, image=args.image)


if __name__ == "__main__":
    main()
