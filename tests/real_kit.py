"""Whether the real-model kit's checkers (if-verifiable) are here: the tests that need them skip without it, except
under ALIGNLOOP_REQUIRE_REAL_KIT=1 (CI), where a missing kit fails instead of skipping."""

from __future__ import annotations

import importlib.util
import os

import pytest

CHECKERS_MISSING = (importlib.util.find_spec("if_verifiable") is None
                    and os.environ.get("ALIGNLOOP_REQUIRE_REAL_KIT") != "1")
REASON = "if-verifiable is not installed (the real-model kit)"
needs_checkers = pytest.mark.skipif(CHECKERS_MISSING, reason=REASON)


def skip_module_without_checkers() -> None:
    if CHECKERS_MISSING:
        pytest.skip(REASON, allow_module_level=True)
