"""``hacontrol completion bash|zsh``: a completion script generated from the parser itself
(shtab), so it always offers the commands and flags this version has.

    hacontrol completion bash | sudo tee /etc/bash_completion.d/hacontrol
    hacontrol completion zsh  | sudo tee /usr/local/share/zsh/site-functions/_hacontrol
"""

from __future__ import annotations

import argparse
import sys

from hacontrol.cli.commands.base import EXIT_OK, SubParsers

SHELLS = ("bash", "zsh")


def register(sub: SubParsers, root: argparse.ArgumentParser) -> None:
    """`root`: the parser to complete (the whole command line, not this subcommand)."""
    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh)",
                       description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(run=lambda args: print_script(root, args.shell))


def script(root: argparse.ArgumentParser, shell: str) -> str:
    # Imported on use: shtab costs ~40 ms of start-up that no other command should pay.
    import shtab

    return str(shtab.complete(root, shell=shell))


def print_script(root: argparse.ArgumentParser, shell: str) -> int:
    sys.stdout.write(script(root, shell))
    return EXIT_OK
