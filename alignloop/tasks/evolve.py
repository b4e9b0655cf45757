"""Stage `evolve` (eva's creator): from this iteration's prompts and response scores, the prompts of the next
iteration — informative prompts evolved into new ones, mixed with the buffer of earlier prompts.

Every row of `next_prompts.jsonl` keeps its lineage: `parent_id`, `operator`, `parent_informativeness` and `born`
(the iteration whose creator wrote it; buffer rows keep theirs, pool prompts have `operator: pool`).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter, defaultdict
from typing import Callable

from alignloop.config import Config
from alignloop.errors import InputError
from alignloop.io import read_jsonl, write_json, write_jsonl
from alignloop.methods.creator import informativeness, mix, select_seeds, validate
from alignloop.models.generation import prompt_token_ids
from alignloop.models.policy import load_policy, load_tokenizer
from alignloop.paths import Layout, eval_split_names
from alignloop.seeds import derive_seed
from alignloop.sources.models import policy_dir
from alignloop.sources.prompts import prompt_id
from alignloop.stage_rows import SampleRow, ScoreRow, read_rows
from alignloop.testbed.data import task_row
from alignloop.testbed.evolution import Limits, difficulty, evolve_task, parse_task, task_from_row, unsolvable_reason

log = logging.getLogger(__name__)
LINEAGE = ("parent_id", "operator", "parent_informativeness", "born")
EVOLVE_ATTEMPTS = 4  # tries per testbed variant before giving up on it
CHECK_AND_EOS = 3  # " ✓" and EOS after the answer: the budget a full-credit response needs beyond the answer


def prompt_scores(prompts: list[dict], score_rows: list[dict], metric: str) -> list[float]:
    rewards: dict[str, list[float]] = defaultdict(list)
    for row in score_rows:
        rewards[row["prompt_id"]].append(row["score"])
    missing = [row["prompt_id"] for row in prompts if not rewards[row["prompt_id"]]]
    if missing:
        raise InputError(f"evolve: {len(missing)} prompts have no scored responses (e.g. {missing[0]}); "
                         "re-run the rank stage")
    return [informativeness(rewards[row["prompt_id"]], metric) for row in prompts]


def buffer_rows(layout: Layout, iteration: int) -> list[dict]:
    """Every prompt of iterations 1..i, once (first appearance), lineage kept; pool prompts get `operator: pool`."""
    rows, seen = [], set()
    for k in range(1, iteration + 1):
        for row in read_jsonl(layout.prompts(k)):
            if row["prompt"] not in seen:
                seen.add(row["prompt"])
                lineage = {"parent_id": None, "operator": "pool", "parent_informativeness": None, "born": k}
                rows.append({**{key: value for key, value in row.items() if key != "iteration"},
                             **{key: row.get(key, lineage[key]) for key in LINEAGE}})
    return rows


def testbed_candidates(cfg: Config, seeds: list[tuple[dict, float]], iteration: int,
                       rng: random.Random) -> tuple[list[dict], Counter]:
    """`variants_per_seed` solvable variants per seed; an operator that cannot apply or yields an unsolvable task is
    retried (up to EVOLVE_ATTEMPTS times), and each failed attempt is counted by reason."""
    limits = Limits(cfg.evolve.max_depth, cfg.evolve.max_input_length)
    max_answer = cfg.sample.max_new_tokens - CHECK_AND_EOS
    candidates, failed = [], Counter()
    for parent, score in seeds:
        for _ in range(cfg.evolve.variants_per_seed):
            for _ in range(EVOLVE_ATTEMPTS):
                operator, task = evolve_task(task_from_row(parent), limits, cfg.evolve.in_depth_probability, rng)
                reason = f"{operator} not applicable" if task is None else unsolvable_reason(task, max_answer)
                if reason is None:
                    candidates.append(task_row(task, parent_id=parent["prompt_id"], operator=operator,
                                               parent_informativeness=score, born=iteration))
                    break
                failed[reason] += 1
    return candidates, failed


def llm_candidates(cfg: Config, layout: Layout, seeds: list[tuple[dict, float]], iteration: int,
                   rng: random.Random) -> tuple[list[dict], Counter]:
    from alignloop.models.llm_evolver import llm_rewrites, plan_rewrites

    source = policy_dir(cfg, layout, iteration - 1) if cfg.evolve.llm_model == "policy" else cfg.evolve.llm_model
    model, tokenizer = load_policy(source, cfg.model)
    plan = plan_rewrites(len(seeds), cfg.evolve.variants_per_seed, cfg.evolve.in_depth_probability, rng)
    rewrites = llm_rewrites(model, tokenizer, [row["prompt"] for row, _ in seeds], plan,
                            temperature=cfg.evolve.llm_temperature, top_p=cfg.evolve.llm_top_p,
                            max_new_tokens=cfg.evolve.llm_max_new_tokens, batch_size=cfg.sample.batch_size,
                            seed=derive_seed(cfg.seed, "evolve", iteration), kv_cache=cfg.model.kv_cache)
    candidates, skipped = [], Counter()
    for rewrite in rewrites:
        if rewrite.text is None:
            skipped["meta-prompt too long for the evolver"] += 1
            continue
        parent, score = seeds[rewrite.seed_index]
        lineage = {"parent_id": parent["prompt_id"], "operator": rewrite.operator, "parent_informativeness": score,
                   "born": iteration}
        task = parse_task(rewrite.text) if rewrite.text else None
        # The gold ranker grades only tasks in the testbed's language; other text is kept for `solvable` to reject.
        candidates.append(task_row(task, **lineage) if task else
                          {"prompt_id": hashlib.sha1(rewrite.text.encode()).hexdigest()[:12], "prompt": rewrite.text,
                           **lineage})
    return candidates, skipped


def type_failure_rates(prompts: list[dict], samples: list[dict], family: str) -> dict[str, float]:
    """Per instruction id, the share of this iteration's responses that broke it (strict): where the policy fails."""
    from alignloop.verifiers.checkers import check_response

    by_id = {row["prompt_id"]: row for row in prompts}
    broken: Counter = Counter()
    seen: Counter = Counter()
    for sample in samples:
        row = by_id[sample["prompt_id"]]
        verdicts = check_response(family, row["instruction_id_list"], row["kwargs"], sample["response"])
        for iid, (strict, _) in zip(row["instruction_id_list"], verdicts):
            seen[iid] += 1
            broken[iid] += not strict
    return {iid: broken[iid] / seen[iid] for iid in seen}


def constraint_candidates(cfg: Config, layout: Layout, seeds: list[tuple[dict, float]], iteration: int,
                          rng: random.Random) -> tuple[list[dict], Counter]:
    """`variants_per_seed` variants per seed: the same user prompt with one more constraint (in depth, with
    `in_depth_probability`) or one swapped for another type (in breadth), the new type drawn from
    data.constraints.train in proportion to how often this iteration's responses broke it (a type no prompt carried
    weighs as a type always broken). Every variant is verifiable: its ids and arguments are on the row."""
    from alignloop.verifiers.checkers import constrained_prompt, evolve_constraints, rebuilt_constraints

    train = cfg.data.constraint_sets.train
    family, allowed = train.family, train.instruction_ids()
    failures = type_failure_rates(read_jsonl(layout.prompts(iteration)),
                                  read_rows(layout.samples(iteration), SampleRow), family)
    weights = {iid: failures.get(iid, 1.0) for iid in allowed}
    candidates, failed = [], Counter()
    for parent, score in seeds:
        constraints = rebuilt_constraints(family, parent["instruction_id_list"], parent["kwargs"])
        for variant in range(cfg.evolve.variants_per_seed):
            for attempt in range(EVOLVE_ATTEMPTS):
                operator = "add_constraint" if rng.random() < cfg.evolve.in_depth_probability else "swap_constraint"
                drawn = evolve_constraints(family, constraints, allowed, operator, weights, cfg.evolve.max_constraints,
                                           seed=derive_seed(cfg.seed, "evolve", iteration, parent["prompt_id"],
                                                            variant, attempt))
                if drawn is None:
                    failed[f"{operator} not applicable"] += 1
                    continue
                text = constrained_prompt(parent["base_prompt"], drawn)
                candidates.append({
                    "prompt_id": prompt_id(text), "prompt": text, "base_prompt": parent["base_prompt"],
                    "source_id": parent.get("source_id", ""), "constraint_family": family,
                    "instruction_id_list": [c.instruction_id for c in drawn], "kwargs": [c.kwargs for c in drawn],
                    "parent_id": parent["prompt_id"], "operator": operator, "parent_informativeness": score,
                    "born": iteration})
                break
    return candidates, failed


def solvable_check(cfg: Config) -> Callable[[dict], str | None]:
    """The gold ranker grades only testbed tasks it can solve; a learned ranker scores any prompt."""
    max_answer = cfg.sample.max_new_tokens - CHECK_AND_EOS
    if cfg.rank.ranker != "gold":
        return lambda row: None

    def reason(row: dict) -> str | None:
        if "answer" not in row:
            return "not a testbed task (no gold answer)"
        return unsolvable_reason(task_from_row(row), max_answer)

    return reason


def run_evolve(cfg: Config, layout: Layout, iteration: int) -> None:
    prompts = read_jsonl(layout.prompts(iteration))
    if not prompts:
        raise InputError(f"evolve: {layout.prompts(iteration)} has no prompts")
    scores = prompt_scores(prompts, read_rows(layout.scores(iteration), ScoreRow), cfg.evolve.informativeness)
    rng = random.Random(derive_seed(cfg.seed, "evolve", iteration))
    seed_indices = select_seeds(scores, cfg.evolve.seed_fraction, cfg.evolve.selection, rng)
    seeds = [(prompts[k], scores[k]) for k in seed_indices]

    if cfg.evolve.evolver == "testbed":
        candidates, skipped = testbed_candidates(cfg, seeds, iteration, rng)
    elif cfg.evolve.evolver == "constraints":
        candidates, skipped = constraint_candidates(cfg, layout, seeds, iteration, rng)
    else:
        candidates, skipped = llm_candidates(cfg, layout, seeds, iteration, rng)
    tokenizer = load_tokenizer(policy_dir(cfg, layout, iteration - 1), cfg.model)
    buffer = buffer_rows(layout, iteration)
    eval_prompts = {row["prompt"] for split in eval_split_names(cfg) for row in read_jsonl(layout.eval_prompts(split))}
    checked = validate(candidates, buffer_prompts={row["prompt"] for row in buffer}, eval_prompts=eval_prompts,
                       prompt_tokens=lambda text: len(prompt_token_ids(tokenizer, text)),
                       max_prompt_tokens=cfg.model.max_length - cfg.sample.max_new_tokens,
                       solvable=solvable_check(cfg))
    rows, from_buffer = mix(checked.accepted, buffer, cfg.sample.num_prompts, cfg.evolve.evolved_fraction, rng)

    rejected = dict(checked.rejected + skipped)
    shortfall = max(0, round(cfg.evolve.evolved_fraction * cfg.sample.num_prompts) - len(checked.accepted))
    stats = {"prompts": len(prompts), "seeds": len(seeds), "candidates": len(candidates),
             "valid": len(checked.accepted), "rejected": rejected, "evolved": len(rows) - from_buffer,
             "from_buffer": from_buffer, "evolved_shortfall": shortfall, "next_prompts": len(rows),
             "seed_informativeness": sum(s for _, s in seeds) / len(seeds),
             "mean_informativeness": sum(scores) / len(scores),
             "operators": dict(Counter(row["operator"] for row in rows[:len(rows) - from_buffer])),
             **{f"next_{name}": value for name, value in mean_difficulty(rows).items()},
             **{f"current_{name}": value for name, value in mean_difficulty(prompts).items()}}
    write_jsonl(layout.next_prompts(iteration), rows)
    write_json(layout.evolve_stats(iteration), stats)
    if shortfall:
        log.warning("evolve: %d of %d candidates valid, %d short of the evolved share; filled from the buffer. "
                    "Rejected: %s", len(checked.accepted), len(candidates) + sum(skipped.values()), shortfall,
                    ", ".join(f"{reason}: {count}" for reason, count in rejected.items()) or "none")
    log.info("evolve iteration %d: %d seeds → %d valid of %d candidates; next set %d evolved + %d from the buffer",
             iteration, len(seeds), len(checked.accepted), len(candidates), len(rows) - from_buffer, from_buffer)


def mean_difficulty(rows: list[dict]) -> dict[str, float]:
    """Mean input length, depth and answer distance of testbed rows (rows without an answer are skipped); for
    verifiable rows, the mean number of constraints per prompt."""
    if rows and all("instruction_id_list" in row for row in rows):
        return {"constraints": sum(len(row["instruction_id_list"]) for row in rows) / len(rows)}
    measured = [difficulty(task_from_row(row)) for row in rows if "answer" in row]
    if not measured:
        return {}
    return {key: sum(m[key] for m in measured) / len(measured) for key in measured[0]}
