"""Conventions of the command line: completion scripts generated from the real parser,
--json on every client command, colour only on a terminal."""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacontrol.cli import colour, output
from hacontrol.cli.commands.completion import script
from hacontrol.cli.main import build_parser, main

# Commands whose answer is not JSON at all: an allocation's log is the program's own bytes.
NO_JSON = {"alloc logs", "allocation logs"}


def _leaves(p: argparse.ArgumentParser, path: tuple[str, ...] = ()
            ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), p
    for a in subs:
        for name, child in a.choices.items():
            yield from _leaves(child, (*path, name))


def _top_level_commands() -> list[str]:
    subs = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(subs[0].choices)


def test_every_client_command_keeps_json() -> None:
    leaves = dict(_leaves(build_parser()))
    clients = {name for name, p in leaves.items() if "handler" in p._defaults}
    # the read commands, named so that losing one of them fails here
    for read in ("status", "job status", "job versions", "alloc list", "alloc status",
                 "node list", "node status", "events", "namespace list", "namespace status",
                 "acl policy list", "acl token list", "acl token self"):
        assert read in clients, read
    missing = sorted(name for name in clients - NO_JSON
                     if "--json" not in leaves[name]._option_string_actions)
    assert not missing, f"client commands without --json: {missing}"


def test_the_bash_script_is_valid_and_completes_the_real_commands(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    path = tmp_path / "hacontrol.bash"
    path.write_text(script(build_parser(), "bash"))
    subprocess.run(["bash", "-n", str(path)], check=True)
    commands = _top_level_commands()
    assert {"job", "node", "completion", "acl"} <= set(commands)

    def complete(*words: str) -> list[str]:
        line = " ".join(("hacontrol", *words))
        prog = (f'source "{path}"; COMP_WORDS=(hacontrol {" ".join(words) or ""} ""); '
                f"COMP_CWORD={len(words) + 1 if words else 1}; COMP_LINE='{line} '; "
                f'COMP_POINT=${{#COMP_LINE}}; _shtab_hacontrol hacontrol "" '
                f'{words[-1] if words else "hacontrol"}; printf "%s\\n" "${{COMPREPLY[@]}}"')
        out = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, check=True)
        return sorted(filter(None, out.stdout.splitlines()))
    assert complete() == commands
    assert {"run", "status", "scale", "stop"} <= set(complete("job"))


def test_the_zsh_script_names_the_real_commands(tmp_path: Path) -> None:
    text = script(build_parser(), "zsh")
    assert text.startswith("#compdef hacontrol")
    for command in _top_level_commands():
        assert f"{command}:" in text or f'"{command}' in text, command
    if shutil.which("zsh"):
        path = tmp_path / "_hacontrol"
        path.write_text(text)
        subprocess.run(["zsh", "-n", str(path)], check=True)


def test_the_completion_command_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    assert "complete -o bashdefault -F _shtab_hacontrol hacontrol" in capsys.readouterr().out
    assert main(["completion", "fish"]) == 2


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_never_with_no_color() -> None:
    assert colour.enabled(_Tty(), {"TERM": "xterm"})
    assert not colour.enabled(_Tty(), {"TERM": "xterm", "NO_COLOR": "1"})
    assert not colour.enabled(_Tty(), {"TERM": "dumb"})
    assert not colour.enabled(io.StringIO(), {"TERM": "xterm"})
    assert not colour.enabled(sys.stdout if not sys.stdout.isatty() else io.StringIO(), {})


def test_colour_keeps_columns_and_cannot_be_injected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    table = output.format_table(["NAME", "STATE"], [["web", "running"], ["x-failed", "failed"]])
    painted = output.human(table + "\n\x1b[2Jevil", _Tty())
    strip = painted.replace(colour.GREEN, "").replace(colour.RED, "").replace(colour.RESET, "")
    assert strip == output.terminal_safe(table + "\n\x1b[2Jevil")
    assert f"{colour.GREEN}running{colour.RESET}" in painted
    assert f"{colour.RED}failed{colour.RESET}" in painted
    assert "x-failed" in painted  # part of a name: left alone
    assert "\x1b[2J" not in painted
    assert output.human(table, io.StringIO()) == table  # not a terminal: plain
