"""``python -m worldenv``: the same as the ``worldenv`` command."""

from worldenv.cli import main

raise SystemExit(main())
