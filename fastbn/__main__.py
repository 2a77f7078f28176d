"""``python -m fastbn ...`` is the ``fastbn`` command."""

import sys

from .cli import main

sys.exit(main())
