"""`python -m chaos.lazyfs BACKING MOUNTPOINT`: serve a power-loss mount in the foreground."""

from __future__ import annotations

import argparse
import logging

from .fs import serve


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m chaos.lazyfs", description=__doc__)
    p.add_argument("backing", help="directory holding what was synced")
    p.add_argument("mountpoint")
    p.add_argument("--debug", action="store_true", help="log every FUSE call")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(asctime)s lazyfs: %(message)s")
    serve(args.backing, args.mountpoint, debug=args.debug)


if __name__ == "__main__":
    main()
