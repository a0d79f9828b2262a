"""``python -m pets_lite.deid IN OUT --key-file KEY``: the command :mod:`pets_lite.deid.cli`."""

import sys

from .cli import main

sys.exit(main())
