"""`hacontrol agent` builds a parser of its own command group only, and the process of such a
command line does not import what client commands need."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hacontrol.cli.main import build_parser, command_named


@pytest.mark.parametrize(("argv", "command"), [
    (["agent", "--name", "n1"], "agent"),
    (["--addr", "http://x:1", "agent"], "agent"),
    (["--addr=http://x:1", "job", "list"], "job"),
    (["--tok", "agent", "job", "list"], "job"),  # an abbreviated --token takes its value
    (["--token-file", "f", "status"], "status"),
    (["--version"], None),
    (["--", "agent"], None),
    ([], None),
])
def test_the_command_a_command_line_names(argv: list[str], command: str | None) -> None:
    assert command_named(argv) == command


def test_the_lean_parser_reads_an_agent_command_line_as_the_whole_one_does() -> None:
    argv = ["agent", "--name", "n1", "--data-dir", "/tmp/d", "--controllers",
            "http://a:1,http://b:2", "--port", "8200", "--label", "zone=a", "--cpu", "2"]
    assert vars(build_parser("agent").parse_args(argv)) == vars(build_parser().parse_args(argv))


def agent_process_modules() -> list[str]:
    """The modules a fresh interpreter holds once it has read an agent's command line as
    `hacontrol agent` does and imported the agent."""
    code = ("import json, sys\n"
            "from hacontrol.cli.main import build_parser\n"
            "build_parser('agent').parse_args(['agent', '--name', 'n'])\n"
            "import hacontrol.agent.main\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return list(json.loads(out))


def test_an_agent_process_imports_no_client_command_module() -> None:
    client = ("hacontrol.cli", "yaml", "aiohttp", "prometheus_client", "http.client",
              "urllib.request")
    assert [m for m in agent_process_modules() if m.startswith(client)] == [
        "hacontrol.cli", "hacontrol.cli.addrs", "hacontrol.cli.commands",
        "hacontrol.cli.commands.agent", "hacontrol.cli.commands.base",
        "hacontrol.cli.commands.flags", "hacontrol.cli.config", "hacontrol.cli.main"]


def test_an_agent_process_keeps_no_module_it_needs_only_now_and_then() -> None:
    """What an agent imports it keeps for as long as it runs. These were 0.2 to 0.9 MB
    each (bench/agent_rss.py): hashlib and hmac (OpenSSL's digests, for two short
    hashes), shutil with zlib, bz2 and lzma (argparse's terminal width), random, platform,
    datetime, and a config file's tomllib and difflib."""
    occasional = {"hashlib", "_hashlib", "hmac", "shutil", "zlib", "bz2", "lzma", "random",
                  "platform", "datetime", "tomllib", "difflib"}
    assert [m for m in agent_process_modules() if m in occasional] == []


@pytest.mark.parametrize("columns", [None, "0", "-3", "abc", "60", "200"])
def test_help_is_as_wide_as_shutil_would_make_it(columns: str | None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from hacontrol.cli.main import _columns

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert _columns() == shutil.get_terminal_size().columns
