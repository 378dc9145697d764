"""``python -m medharness``: the same as the ``medharness`` command."""

from medharness.cli import entry

entry()
