"""Every random draw's seed, derived from the run's seed and where the draw happens, so that no two draws share one
and each can be recomputed from what a row records."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts (base seed, stage, iteration, batch...)."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF
