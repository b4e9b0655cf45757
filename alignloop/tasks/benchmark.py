"""Stage `benchmark`: the policy after iteration i on every evaluation split.

Per split: mean gold score with greedy decoding and with sampling, exact match, win rate of greedy responses against
the SFT model's greedy responses (gold judge, ties count half), mean response length in tokens, mean token entropy
of the sampled responses. Iteration 0 is the SFT model.
"""

from __future__ import annotations

import logging
import math
from statistics import mean

import torch

from alignloop.config import Config
from alignloop.io import read_jsonl, write_json, write_jsonl
from alignloop.models.generation import derive_seed, generate
from alignloop.models.logprobs import collate, mean_token_entropy, to_device, tokenize_response
from alignloop.models.policy import load_policy
from alignloop.paths import EVAL_SPLITS, Layout
from alignloop.testbed.scorer import exact_match, gold_score

log = logging.getLogger(__name__)


def win_rate(scores: list[float], baseline_scores: list[float]) -> float:
    """P(score > baseline) + ½·P(tie), over paired prompts."""
    if not scores:
        return float("nan")
    return mean(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, baseline_scores, strict=True))


@torch.no_grad()
def sampled_entropy(model, tokenizer, prompts: list[str], responses: list[str], finished: list[bool],
                    max_length: int, batch_size: int) -> float:
    """Mean per-token entropy of the policy along its own sampled responses."""
    values = []
    for start in range(0, len(prompts), batch_size):
        sequences = [tokenize_response(tokenizer, p, r, f, max_length) for p, r, f in
                     zip(prompts[start:start + batch_size], responses[start:start + batch_size],
                         finished[start:start + batch_size])]
        values.append(mean_token_entropy(model, to_device(collate(sequences, tokenizer.pad_token_id), model.device)))
    return torch.cat(values).mean().item()


def run_benchmark(cfg: Config, layout: Layout, iteration: int) -> None:
    bench = cfg.benchmark
    model, tokenizer = load_policy(layout.policy(iteration), cfg.model)
    baseline = {} if iteration == 0 else {
        (row["split"], row["prompt_id"]): row["greedy_score"] for row in read_jsonl(layout.benchmark_outputs(0))}
    metrics: dict[str, float] = {}
    outputs: list[dict] = []
    all_scores, all_baseline = [], []
    for split in EVAL_SPLITS:
        rows = read_jsonl(layout.eval_prompts(split))
        prompts, ids = [row["prompt"] for row in rows], [row["prompt_id"] for row in rows]
        greedy = generate(model, tokenizer, prompts, greedy=True, max_new_tokens=bench.max_new_tokens,
                          batch_size=bench.batch_size, prompt_ids=ids, description=f"benchmark {split} greedy")
        sampled = generate(model, tokenizer, prompts, num_samples=bench.num_samples,
                           temperature=bench.sampled_temperature, max_new_tokens=bench.max_new_tokens,
                           batch_size=bench.batch_size, seed=derive_seed(cfg.seed, "benchmark", split),
                           prompt_ids=ids, description=f"benchmark {split} sampled")
        greedy_scores = [gold_score(row["answer"], gens[0].text) for row, gens in zip(rows, greedy)]
        sampled_scores = [[gold_score(row["answer"], g.text) for g in gens] for row, gens in zip(rows, sampled)]
        flat_samples = [(row["prompt"], g) for row, gens in zip(rows, sampled) for g in gens]
        baseline_scores = [baseline.get((split, pid), score) for pid, score in zip(ids, greedy_scores)]
        metrics |= {
            f"{split}/greedy_gold": mean(greedy_scores),
            f"{split}/sampled_gold": mean(s for scores in sampled_scores for s in scores),
            f"{split}/greedy_exact_match": mean(exact_match(r["answer"], g[0].text) for r, g in zip(rows, greedy)),
            f"{split}/sampled_exact_match": mean(exact_match(r["answer"], g.text)
                                                 for r, gens in zip(rows, sampled) for g in gens),
            f"{split}/win_rate_vs_sft": win_rate(greedy_scores, baseline_scores),
            f"{split}/greedy_length": mean(g[0].num_tokens for g in greedy),
            f"{split}/sampled_length": mean(g.num_tokens for _, g in flat_samples),
            f"{split}/sampled_entropy": sampled_entropy(
                model, tokenizer, [p for p, _ in flat_samples], [g.text for _, g in flat_samples],
                [g.finished for _, g in flat_samples], cfg.model.max_length, bench.batch_size),
        }
        all_scores += greedy_scores
        all_baseline += baseline_scores
        outputs += [{"split": split, "prompt_id": pid, "prompt": row["prompt"], "answer": row["answer"],
                     "greedy": gens[0].text, "greedy_score": score,
                     "sampled": [g.text for g in samples], "sampled_scores": s_scores}
                    for pid, row, gens, score, samples, s_scores
                    in zip(ids, rows, greedy, greedy_scores, sampled, sampled_scores)]
    metrics["win_rate_vs_sft"] = win_rate(all_scores, all_baseline)
    metrics = {key: (round(value, 6) if math.isfinite(value) else None) for key, value in metrics.items()}
    write_jsonl(layout.benchmark_outputs(iteration), outputs)
    write_json(layout.metrics(iteration), metrics)
    log.info("benchmark iteration %d: %s", iteration,
             ", ".join(f"{k}={v}" for k, v in metrics.items() if k.endswith("_gold")))
