"""``python -m gigapatch ...``: the same as the ``gigapatch`` command."""

import sys

from .cli import main

sys.exit(main())
