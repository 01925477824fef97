"""``python -m distjudge``: the command line."""

import sys

from distjudge.cli import main

sys.exit(main())
