"""Stage `cfn` (COPO): add this iteration's visits to the replay buffer, train a Coin Flipping Network on it, and
write each pair's exploration bonus.

A visit is one sampled (prompt, response); its state is the iteration-start model's last-token hidden state. Each
iteration saves only its own visits (features + the coin flips drawn once for each) in
`artifacts/iter-<i>/cfn/visits.safetensors`; with `cfn.replay: all` the buffer is every iteration's visits so far,
so counts accumulate over the run without the buffer being written again every iteration.
"""

from __future__ import annotations

import logging
import time

import torch
from safetensors.torch import load_file, save_file

from alignloop.config import Config
from alignloop.errors import InputError, NonFiniteError
from alignloop.io import atomic_path, write_json, write_jsonl
from alignloop.models.cfn_features import last_token_features
from alignloop.models.coin_flipping import CFNHead, ReplayBuffer, bonuses, pseudo_counts, train_cfn
from alignloop.models.generation import generate
from alignloop.models.logprobs import tokenize_ids
from alignloop.models.policy import load_policy
from alignloop.paths import Layout
from alignloop.seeds import derive_seed
from alignloop.sources.models import policy_dir
from alignloop.stage_rows import PairRow, SampleRow, read_rows

log = logging.getLogger(__name__)
HEAD_FILE = "head.safetensors"


def load_visits(layout: Layout, iteration: int) -> ReplayBuffer:
    stored = load_file(str(layout.cfn_visits(iteration)))
    return ReplayBuffer(stored["features"], stored["flips"])


def replay_buffer(layout: Layout, iterations: range, hidden: int, d: int) -> ReplayBuffer:
    """The visits of these iterations, in order: the buffer as it stood after the last of them."""
    parts = [load_visits(layout, k) for k in iterations]
    if not parts:
        return ReplayBuffer.empty(hidden, d)
    return ReplayBuffer(torch.cat([p.features for p in parts]), torch.cat([p.flips for p in parts]))


def explored_responses(cfg: Config, pairs: list[dict], model, tokenizer, iteration: int
                       ) -> list[tuple[str, list[int], bool]]:
    """(text, token ids, finished) of y_e for every pair: its chosen response, or the start model's greedy one."""
    if cfg.cfn.explore == "chosen":
        return [(row["chosen"], row["chosen_ids"], row["chosen_finished"]) for row in pairs]
    greedy = generate(model, tokenizer, [row["prompt"] for row in pairs], greedy=True,
                      max_new_tokens=cfg.sample.max_new_tokens, batch_size=cfg.sample.batch_size,
                      max_length=cfg.model.max_length, description=f"cfn greedy iter {iteration}",
                      kv_cache=cfg.model.kv_cache)
    return [(gens[0].text, list(gens[0].token_ids), gens[0].finished) for gens in greedy]


def check_bonuses(bonus: torch.Tensor, counts: torch.Tensor, iteration: int) -> None:
    """inf/NaN bonuses would turn COPO's term into NaN at the first optimize step: stop here, naming the stage."""
    bad = int((~torch.isfinite(bonus)).sum() + (~torch.isfinite(counts)).sum())
    if bad:
        raise NonFiniteError(f"cfn iteration {iteration}: {bad} non-finite bonuses or pseudo-counts; nothing was "
                             "saved. Lower cfn.learning_rate")


def run_cfn(cfg: Config, layout: Layout, iteration: int) -> None:
    started = time.perf_counter()
    model, tokenizer = load_policy(policy_dir(cfg, layout, iteration - 1), cfg.model)
    samples, pairs = read_rows(layout.samples(iteration), SampleRow), read_rows(layout.pairs(iteration), PairRow)
    if not samples:
        raise InputError(f"cfn: {layout.samples(iteration)} has no samples")

    def features_of(rows: list[tuple[str, list[int]]]) -> torch.Tensor:
        sequences = tokenize_ids(tokenizer, rows, cfg.model.max_length)
        return last_token_features(model, sequences, tokenizer.pad_token_id, cfg.cfn.feature_batch_size)

    visits = features_of([(row["prompt"], row["response_ids"]) for row in samples])
    features_done = time.perf_counter()
    explored = explored_responses(cfg, pairs, model, tokenizer, iteration)
    if cfg.cfn.explore == "chosen":  # the chosen responses are visits already: reuse their features
        index = {(row["prompt_id"], row["sample_index"]): k for k, row in enumerate(samples)}
        explored_features = visits[[index[(row["prompt_id"], row["chosen_index"])] for row in pairs]]
    else:
        explored_features = features_of([(row["prompt"], ids) for row, (_, ids, _) in zip(pairs, explored)])

    train_started = time.perf_counter()
    generator = torch.Generator().manual_seed(derive_seed(cfg.seed, "cfn", iteration))
    hidden = visits.shape[1]
    previous = replay_buffer(layout, range(1, iteration) if cfg.cfn.replay == "all" else range(0), hidden, cfg.cfn.d)
    buffer = previous.add(visits, generator)
    head = CFNHead(hidden, cfg.cfn.d, cfg.cfn.width, cfg.cfn.dropout, cfg.cfn.prior_scale,
                   seed=derive_seed(cfg.seed, "cfn-head", iteration))
    losses = train_cfn(head, buffer, steps=cfg.cfn.steps, batch_size=cfg.cfn.batch_size,
                       learning_rate=cfg.cfn.learning_rate, generator=generator)
    bonus = bonuses(head, explored_features, cfg.cfn.bonus_exponent)
    counts = pseudo_counts(head, explored_features)
    train_done = time.perf_counter()
    check_bonuses(bonus, counts, iteration)

    with atomic_path(layout.cfn(iteration)) as tmp:
        tmp.mkdir()
        save_file({"features": buffer.features[len(previous):].contiguous(),
                   "flips": buffer.flips[len(previous):].contiguous()}, str(tmp / layout.cfn_visits(iteration).name))
        save_file({name: tensor.contiguous() for name, tensor in head.state_dict().items()}, str(tmp / HEAD_FILE))
        write_jsonl(tmp / "bonuses.jsonl", (
            {"pair_id": row["pair_id"], "explore_response": text, "explore_ids": ids, "explore_finished": finished,
             "bonus": b, "pseudo_count": n}
            for row, (text, ids, finished), b, n in zip(pairs, explored, bonus.tolist(), counts.tolist())))
        stats = {"visits_added": len(visits), "buffer_visits": len(buffer), "pairs": len(pairs),
                 "mean_bonus": bonus.mean().item() if len(bonus) else None,
                 "median_pseudo_count": counts.median().item() if len(counts) else None,
                 "first_loss": losses[0], "final_loss": sum(losses[-10:]) / len(losses[-10:]),
                 "steps": len(losses)}
        write_json(tmp / layout.cfn_stats(iteration).name, stats)
    # timings are logged, never written: a rerun must write the same bytes
    log.info("cfn iteration %d: %d visits added (buffer %d), %d steps, mean bonus %.3f, median pseudo-count %.1f "
             "(features %.1f s, training %.1f s, %.1f s in all)", iteration, len(visits), len(buffer), len(losses),
             stats["mean_bonus"] or 0.0, stats["median_pseudo_count"] or 0.0, features_done - started,
             train_done - train_started, time.perf_counter() - started)
