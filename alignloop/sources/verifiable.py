"""`data.sharegpt`: real user prompts with verifiable constraints appended, in the shape of the testbed's data/ files.

The recipe of Tülu 3's RLVR data and IFBench: a prompt (a ShareGPT conversation's first human turn) plus one or more
instructions that a checker can verify (IFEval's or IFBench's), with the checker's ids and arguments on the row, so
the `verifier` ranker can score any response. Training constraint types are `data.constraints.train`; the
`unseen_types` evaluation set carries `data.constraints.unseen`, which training never sees.

Prompts are held out by content hash (the candidates with the smallest prompt hash), so the same file gives the same
held-out prompts with any seed or training size. Every prompt removed on the way is counted in prepare_stats.json.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from alignloop.config.data import VERIFIABLE_EVAL_SETS, ConstraintSetConfig, ShareGPTConfig
from alignloop.seeds import derive_seed
from alignloop.sources.prompts import DataError, prompt_id
from alignloop.sources.resources import resolve_file

log = logging.getLogger(__name__)

Row = dict


def sharegpt_candidates(spec: ShareGPTConfig, root: Path) -> tuple[list[tuple[str, str | None, str]], dict]:
    """(prompt, first answer, record id) of every conversation whose first human turn passes the filters, in file
    order, and the counts of what was removed."""
    from alignloop.sources.sharegpt import first_exchange, read_sharegpt

    path = resolve_file(spec.path, root, "data.sharegpt.path")
    try:
        records, truncated = read_sharegpt(path)
    except ValueError as exc:
        raise DataError(f"data.sharegpt.path: {exc}") from None
    stats = {"records": len(records), "truncated": truncated, "no_prompt": 0, "length": 0, "multi_line": 0,
             "non_ascii": 0, "duplicates": 0}
    seen: set[str] = set()
    kept = []
    for record in records:
        prompt, answer = first_exchange(record)
        prompt = prompt.strip() if isinstance(prompt, str) else None
        reason = ("no_prompt" if not prompt
                  else "length" if not spec.min_chars <= len(prompt) <= spec.max_chars
                  else "multi_line" if spec.single_line and "\n" in prompt
                  else "non_ascii" if spec.ascii_only and not prompt.isascii()
                  else "duplicates" if prompt in seen else None)
        if reason:
            stats[reason] += 1
            continue
        seen.add(prompt)
        kept.append((prompt, answer.strip() if isinstance(answer, str) and answer.strip() else None,
                     str(record.get("id", ""))))
    stats["candidates"] = len(kept)
    if not kept:
        raise DataError(f"data.sharegpt: no prompts left after filtering ({_counts(stats)})")
    return kept, stats


def _counts(stats: dict) -> str:
    return ", ".join(f"{value} {key.replace('_', ' ')}" for key, value in stats.items())


def constrained_row(prompt: str, record_id: str, constraints: ConstraintSetConfig | None, seed: int, split: str
                    ) -> Row:
    """A prompt row: the prompt with its constraints appended (drawn from `seed` and the prompt), and the checkers'
    ids and arguments; `constraints` None leaves the prompt as it is (the no_constraint set)."""
    from alignloop.verifiers.checkers import constrained_prompt, draw_constraints

    drawn = [] if constraints is None else draw_constraints(
        constraints.family, constraints.instruction_ids(), constraints.min_per_prompt, constraints.max_per_prompt,
        seed=derive_seed(seed, "constraints", split, prompt_id(prompt)))
    text = constrained_prompt(prompt, drawn) if drawn else prompt
    return {"prompt_id": prompt_id(text), "prompt": text, "base_prompt": prompt, "source_id": record_id,
            "constraint_family": None if constraints is None else constraints.family,
            "instruction_id_list": [c.instruction_id for c in drawn], "kwargs": [c.kwargs for c in drawn]}


def _fill(by_hash: list[tuple[str, str | None, str]], position: int, count: int, make: Callable[[str, str], Row],
          too_long: Callable[[str], bool]) -> tuple[list[Row], int, int]:
    """From `position` on: the next `count` candidates whose row fits, how many were too long (they are used up too:
    held out, never trained on), and the position after the last one used."""
    rows, dropped = [], 0
    while len(rows) < count and position < len(by_hash):
        prompt, _, record_id = by_hash[position]
        position += 1
        row = make(prompt, record_id)
        if too_long(row["prompt"]):
            dropped += 1
        else:
            rows.append(row)
    return rows, dropped, position


def prepare_verifiable_sets(data, root: Path, seed: int, count_tokens: Callable[[str], int],
                            max_train_prompt_tokens: int, max_eval_prompt_tokens: int
                            ) -> tuple[dict[str, list[Row]], dict[str, dict[str, int]]]:
    """Files for data/: {"train_prompts", "eval/<set>" for each of VERIFIABLE_EVAL_SETS, "reference_answers"} and
    the counts per set. Candidates in prompt-hash order go to the evaluation sets, then to the reference answers;
    the rest, in file order, are the training pool."""
    spec, sets = data.sharegpt, data.constraint_sets
    candidates, source_stats = sharegpt_candidates(spec, root)
    by_hash = sorted(candidates, key=lambda item: prompt_id(item[0]))
    files: dict[str, list[Row]] = {}
    stats: dict[str, dict[str, int]] = {"sharegpt": source_stats}
    eval_constraints = {"in_distribution": sets.train, "unseen_types": sets.unseen, "no_constraint": None}
    position = 0
    for name in VERIFIABLE_EVAL_SETS:
        def make(prompt: str, record_id: str, name: str = name) -> Row:
            return {**constrained_row(prompt, record_id, eval_constraints[name], seed, name), "split": name}

        rows, dropped, position = _fill(by_hash, position, spec.eval_size, make,
                                        lambda text: count_tokens(text) > max_eval_prompt_tokens)
        if not rows:
            raise DataError(f"data.sharegpt.eval_size: no {name} prompt fits model.max_length minus "
                            "benchmark.max_new_tokens")
        files[f"eval/{name}"] = rows
        stats[f"eval/{name}"] = {"kept": len(rows), "too_long": dropped}
    references: list[Row] = []
    while len(references) < spec.reference_answers and position < len(by_hash):
        prompt, answer, record_id = by_hash[position]
        position += 1
        if answer is not None:
            references.append({"prompt_id": prompt_id(prompt), "prompt": prompt, "answer": answer,
                               "source_id": record_id})
    files["reference_answers"] = references
    stats["reference_answers"] = {"kept": len(references)}

    held_out = {prompt for prompt, _, _ in by_hash[:position]}
    pool = [item for item in candidates if item[0] not in held_out][:spec.max_train_prompts]
    train, too_long = [], 0
    for prompt, _, record_id in pool:
        row = constrained_row(prompt, record_id, sets.train, seed, "train")
        if count_tokens(row["prompt"]) > max_train_prompt_tokens:
            too_long += 1
        else:
            train.append({**row, "pool_index": len(train)})
    if not train:
        raise DataError("data.sharegpt: no training prompts left (every candidate is held out or too long for "
                        "model.max_length minus sample.max_new_tokens)")
    stats = {"train": {"held_out": len(held_out), "too_long": too_long, "kept": len(train)}, **stats}
    log.info("data.sharegpt: %d records (%s); %d training prompts, %s, %d reference answers", source_stats["records"],
             _counts({k: v for k, v in source_stats.items() if k != "records"}), len(train),
             ", ".join(f"{len(files[f'eval/{name}'])} {name}" for name in VERIFIABLE_EVAL_SETS), len(references))
    return {"train_prompts": train, **files}, stats
