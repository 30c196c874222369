"""``python -m unlearnrec``: the command line."""

import sys

from unlearnrec.cli import main

sys.exit(main())
