"""``python -m core.cli`` = the ``lakeops`` command (used by ``lakeops up`` for its children)."""

from core.cli import main

main()
