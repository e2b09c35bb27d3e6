"""``python -m run_lifecycle``: the same command line as ``run-lifecycle``."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
