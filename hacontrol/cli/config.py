"""`--config FILE` for `hacontrol server` and `hacontrol agent`: every flag may also be set in
a TOML file (read with the standard library's tomllib); a flag on the command line wins.

Keys are the flags' long names without their leading dashes (`log-level = "debug"`;
`log_level` reads the same). A value passes the same check as the flag's (its `type` and
`choices`), so a file cannot set what the command line would refuse, and a key that names
no flag is an error naming it (with the closest flag). Repeatable flags take a list
(`peer = ["c2=...", "c3=..."]`); `label` and `attribute` also take a table
(`label = {zone = "a"}`). A flag given on the command line replaces the file's value, lists
included.

How: the file's values become the parser's defaults, then the command line is parsed as
usual, so "given on the command line" is exactly what argparse saw. Flags a daemon cannot
start without are checked after that (`required`), since they may come from either place.
SIGHUP re-runs the same resolution (`Namespace.reread`), so the precedence holds on reload.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hacontrol.reload import REQUIRED, REREAD, ConfigError

__all__ = ["ConfigError", "daemon_config", "is_daemon", "load", "resolve"]


def daemon_config(parser: argparse.ArgumentParser) -> None:
    """Add --config to a daemon's parser (after its other flags): its required flags may then
    come from the file instead, and are checked by `resolve`."""
    required = []
    for action in parser._actions:
        if action.required and action.option_strings:
            action.required = False
            action.help = (action.help + " " if action.help else "") + "(required)"
            required.append((action.dest, action.option_strings[-1]))
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="read settings from this TOML file: every flag may be given there "
                             "by its name without dashes, a flag on the command line wins; "
                             "SIGHUP re-reads it")
    parser.set_defaults(**{REQUIRED: tuple(required)})


def _settable(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The flags a file may set, by dest: not --help, --config, or hidden test switches."""
    return {a.dest: a for a in parser._actions
            if a.option_strings and a.help != argparse.SUPPRESS
            and a.dest not in ("help", "config")}


def _items(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [f"{k}={_scalar(v)}" for k, v in value.items()]
    if isinstance(value, list):
        return [_scalar(v) for v in value]
    return [_scalar(value)]


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a string or a number, got {_kind(value)}")
    return str(value)


def _kind(value: Any) -> str:
    return {bool: "true/false", list: "a list", dict: "a table"}.get(type(value),
                                                                    type(value).__name__)


def _check(action: argparse.Action, text: str) -> Any:
    converted: Any = action.type(text) if callable(action.type) else text
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"must be one of {', '.join(map(str, action.choices))}, "
                         f"got {text!r}")
    return converted


def convert(action: argparse.Action, value: Any) -> Any:
    """A file's value for `action`, checked as the command line's would be."""
    if action.nargs == 0:  # a switch (store_true)
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_kind(value)}")
        return value if action.const is True else not value
    if isinstance(action, argparse._ExtendAction):
        out: list[Any] = []
        for text in _items(value):
            got = _check(action, text)
            out.extend(got if isinstance(got, list) else [got])
        return out
    if isinstance(action, argparse._AppendAction):
        return [_check(action, text) for text in _items(value)]
    return _check(action, _scalar(value))


def load(path: Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The settings in `path` by dest, each checked against `parser`'s flag."""
    # Imported here: a daemon without a config file keeps neither (tomllib brings datetime).
    import difflib
    import tomllib

    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    flags = _settable(parser)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        action = flags.get(key.replace("-", "_"))
        if action is None:
            names = [d.replace("_", "-") for d in flags]
            near = difflib.get_close_matches(key.replace("_", "-"), names, 1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"config file {path}: unknown key {key!r}{hint}")
        try:
            out[action.dest] = convert(action, value)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise ConfigError(f"config file {path}: {key}: {exc}") from None
    return out


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            sub: argparse.ArgumentParser = action.choices[command]
            return sub
    raise ConfigError(f"no command {command!r}")


def resolve(build: Callable[[], argparse.ArgumentParser], argv: Sequence[str],
            first: argparse.Namespace) -> argparse.Namespace:
    """The daemon's settings: `first` (argv parsed alone) with its --config file's values
    under the command line's. Raises ConfigError on a bad file or a missing required flag."""
    parser = build()
    lists: dict[str, Any] = {}
    if first.config is not None:
        sub = _subparser(parser, first.command)
        values = load(Path(first.config), sub)
        flags = _settable(sub)
        # A repeatable flag appends to its default: the file's list is used only when the
        # command line gave none, so that the command line replaces it rather than adding.
        lists = {d: v for d, v in values.items()
                 if isinstance(flags[d], argparse._AppendAction | argparse._ExtendAction)}
        sub.set_defaults(**{d: v for d, v in values.items() if d not in lists})
    try:
        args = parser.parse_args(argv)
    except SystemExit:  # argparse said why on stderr; reached only on a reload
        raise ConfigError("the command line no longer parses") from None
    for dest, value in lists.items():
        if not getattr(args, dest):
            setattr(args, dest, value)
    missing = [flag for dest, flag in getattr(args, REQUIRED, ()) if getattr(args, dest) is None]
    if missing:
        raise ConfigError(f"{', '.join(missing)} required: give "
                          f"{'it' if len(missing) == 1 else 'them'} on the command line or "
                          f"in the config file (--config)")
    setattr(args, REREAD, lambda: resolve(build, argv, first))
    return args


def is_daemon(args: argparse.Namespace) -> bool:
    return hasattr(args, REQUIRED)
