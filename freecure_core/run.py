"""``python -m freecure_core.run``: the headless runner's command, kept at this path so the command stays the same.

This module only calls ``main`` of ``freecure_core.runner.cli`` (arguments, ``--help``, exit status); the runner
itself is the package ``freecure_core.runner`` (its public entry is ``freecure_core.runner.run.run_workflow``).
"""
from __future__ import annotations

import sys

from .runner.cli import main

if __name__ == "__main__":
    sys.exit(main())
