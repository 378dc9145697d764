"""``python -m medharness``: the same as the ``medharness`` command."""

import sys

from medharness.cli import main

sys.exit(main())
