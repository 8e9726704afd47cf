"""`python -m msc_rules`: the msc-rules command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
