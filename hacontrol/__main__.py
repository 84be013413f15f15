"""Allow ``python -m hacontrol``; dev mode starts its children this way."""

import sys

from hacontrol.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
