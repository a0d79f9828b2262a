"""Record a notebook's measured results so that tests and the book can read them.

``record("test_auc", 0.95)`` glues the value into the executed notebook with myst-nb's ``glue``
(no visible output). The test-suite reads glued values back from the executed notebook
(``tests/nbrun.py``), and book pages can quote them inline with ``{glue:text}`\`test_auc:.3f\```, so
a number in the prose is always the number the code above it measured.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def _plain(value):
    """Numbers, strings, bools and flat lists/dicts of them, as plain Python values."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    raise TypeError(f"record() takes numbers, strings, bools, lists and dicts, got {type(value)}")


def record(name: str, value) -> None:
    """Glue ``value`` under ``name`` into the executing notebook (silently)."""
    from myst_nb import glue

    glue(name, _plain(value), display=False)
