"""SIGHUP for `hacontrol server` and `hacontrol agent`: re-read the settings (the --config
file under the command line, resolved as at start) and apply those that may change while
the daemon runs. Any other change is named in the log, one line per setting, and waits for
the next restart; until then the running value stays, and each SIGHUP says so again.

Each daemon says which settings it applies live and how (`apply`, called with the changes).
Its TLS files are re-read on every SIGHUP, whether the settings changed or not: a
certificate rotation usually rewrites the files where they are (`tls/reload.py`). A file
that cannot be used (unknown key, bad value, half-written certificate) changes nothing:
the error is logged and the daemon goes on as it was.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hacontrol.tls.context import TLSConfig
from hacontrol.tls.files import ExposedFile

if TYPE_CHECKING:  # the CLI imports this module; the x509 parsing is the daemons' alone
    from hacontrol.tls.reload import LiveContexts

TLS_KEYS = ("tls-ca", "tls-cert", "tls-key")
# Set on a daemon's parsed arguments by `cli/config.py`: the flags it cannot start without
# (from the command line or the file), and how to resolve its settings again.
REQUIRED = "config_required"
REREAD = "reread"


class ConfigError(Exception):
    """Settings a daemon cannot use; the message names the file and the key."""


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """A daemon's settings by flag name (`log-level`), without the dispatch plumbing."""
    skip = {"run", "command", "handler", REQUIRED, REREAD}
    return {k.replace("_", "-"): v for k, v in vars(args).items() if k not in skip}


@dataclass(frozen=True)
class Changes:
    """What differs between the running settings and the new ones (key -> (old, new))."""

    live: dict[str, tuple[Any, Any]]
    at_restart: dict[str, tuple[Any, Any]]


def compare(old: Mapping[str, Any], new: Mapping[str, Any],
            live: Collection[str]) -> Changes:
    """Sort the settings that changed into those applied now and those that wait (pure)."""
    now: dict[str, tuple[Any, Any]] = {}
    later: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before != after:
            (now if key in live else later)[key] = (before, after)
    return Changes(now, later)


def tls_config(args: argparse.Namespace) -> TLSConfig | None:
    ca, cert, key = (getattr(args, n, None) for n in ("tls_ca", "tls_cert", "tls_key"))
    if ca is None:
        return None
    return TLSConfig(Path(ca), Path(cert) if cert else None, Path(key) if key else None)


class Reloader:
    """Holds the running settings of one daemon and reloads them on SIGHUP."""

    def __init__(self, who: str, args: argparse.Namespace, live: Collection[str],
                 apply: Callable[[argparse.Namespace, Changes], None],
                 tls: LiveContexts | None, log: logging.Logger) -> None:
        self.who = who
        self.args = args
        self.live = set(live) | set(TLS_KEYS)
        self.apply = apply
        self.tls = tls
        self.log = log

    def reload(self) -> Changes | None:
        """Re-read and apply; the changes found (None when the settings could not be read)."""
        self.log.info("%s: SIGHUP: reloading its settings", self.who)
        changes = None
        new = self.args
        reread: Callable[[], argparse.Namespace] | None = getattr(self.args, REREAD, None)
        if reread is not None:
            try:
                new = reread()
            except ConfigError as exc:
                self.log.error("reload: %s; the running settings stay", exc)
                new = self.args
        if new is not self.args:
            changes = compare(settings(self.args), settings(new), self.live)
            for key, (old, value) in changes.at_restart.items():
                self.log.warning("reload: %s changed (%r -> %r) but cannot change while "
                                 "running: it applies at the next restart", key, old, value)
                # The running value stays what this process uses (and is compared again).
                setattr(new, key.replace("-", "_"), old)
            try:
                self.apply(new, changes)
            except Exception:  # a reload must never take the daemon down
                self.log.exception("reload: applying the new settings failed")
            for key, (old, value) in changes.live.items():
                if key not in TLS_KEYS:
                    self.log.info("reload: %s now %r (was %r)", key, value, old)
            self.args = new
        self._reload_tls()
        self.log.debug("reload: done")
        return changes

    def _reload_tls(self) -> None:
        if self.tls is None:
            return
        config = tls_config(self.args) or self.tls.config
        try:
            self.log.info("reload: TLS now uses %s", self.tls.reload(config))
        except (OSError, ValueError, ExposedFile) as exc:  # ssl.SSLError is an OSError
            self.log.error("reload: TLS files not loaded (%s): the running certificate "
                           "stays", exc)
