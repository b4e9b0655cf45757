"""Preference pairs from real data (`reward.data`): prompt, chosen and rejected, as text or chat messages.

Read through the same `datasets` path as prompt sets (alignloop/sources/prompts.py). Rows without a prompt or with an
empty response are counted and skipped; a pair whose two responses are identical teaches nothing and is skipped
too. Every pair is assigned to the training or the held-out split by a hash of its prompt, so all pairs of one
prompt land on the same side and the split does not depend on file order.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from alignloop.config.reward import PreferenceSetConfig
from alignloop.sources.prompts import (
    DataError,
    extract_prompt,
    prompt_id,
    read_columns,
    response_from_column,
)

log = logging.getLogger(__name__)

KEY = "reward.data"


def held_out(prompt: str, fraction: float) -> bool:
    """A stable, prompt-level split: the first 8 hex digits of a hash, as a number in [0, 1), below `fraction`."""
    return int(hashlib.sha256(b"eval\0" + prompt.encode("utf-8")).hexdigest()[:8], 16) / 16 ** 8 < fraction


def read_preference_pairs(spec: PreferenceSetConfig, root: Path, eval_fraction: float) -> list[dict]:
    """Rows {pair_id, prompt_id, prompt, chosen, rejected, split: train|eval} in file order; an error if no pair is
    left, or if either split would be empty."""
    wanted = {"chosen_column": spec.chosen_column, "rejected_column": spec.rejected_column}
    if spec.prompt_column:
        wanted["prompt_column"] = spec.prompt_column
    columns = read_columns(spec, KEY, root, wanted)
    prompts = columns.get("prompt_column") or columns["chosen_column"]  # messages: the first user turn
    rows, skipped = [], {"empty": 0, "identical": 0}
    for index, (prompt_value, chosen_value, rejected_value) in enumerate(
            zip(prompts, columns["chosen_column"], columns["rejected_column"])):
        prompt = extract_prompt(prompt_value)
        chosen, rejected = response_from_column(chosen_value), response_from_column(rejected_value)
        if prompt is None or chosen is None or rejected is None:
            skipped["empty"] += 1
            continue
        if chosen == rejected:
            skipped["identical"] += 1
            continue
        pid = prompt_id(prompt)
        rows.append({"pair_id": f"{pid}-{index}", "prompt_id": pid, "prompt": prompt, "chosen": chosen,
                     "rejected": rejected, "split": "eval" if held_out(prompt, eval_fraction) else "train"})
    counts = f"read {len(prompts)}: {skipped['empty']} without a prompt or response, {skipped['identical']} identical"
    splits = {name: sum(row["split"] == name for row in rows) for name in ("train", "eval")}
    if not all(splits.values()):
        empty = next(name for name, count in splits.items() if not count)
        raise DataError(f"{KEY}: no {empty} pairs ({counts}, {len(rows)} pairs left; reward.eval_fraction "
                        f"{eval_fraction} put them all on one side)")
    log.info("%s: %d training and %d held-out pairs (%s)", KEY, splits["train"], splits["eval"], counts)
    return rows
