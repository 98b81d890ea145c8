"""``python -m kwsstream``: the command line, :func:`kwsstream.cli.main` (which takes over Ctrl-C
at its first line; importing it loads only the standard library)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
