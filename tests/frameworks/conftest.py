"""tests/frameworks/ (``make test-frameworks``): the real frameworks, torch included, on
two CPU ranks. A missing framework fails the whole tier; it is never skipped."""

from __future__ import annotations

import importlib.util

import pytest

REQUIRED = ("torch", "lightning", "transformers", "accelerate")

MISSING = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
if MISSING:
    raise pytest.UsageError(
        f"tests/frameworks needs {', '.join(MISSING)}: run `make test-frameworks`, which "
        "installs the `frameworks` extra (PyTorch is a download of ~5 GB)")
