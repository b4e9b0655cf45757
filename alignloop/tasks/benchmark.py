"""Stage `benchmark`: the policy after iteration i on every evaluation set.

Per set, judged by the run's ranker (`gold` on the testbed, the reward model otherwise): the mean score of greedy
and of sampled responses (`greedy_<judge>`, `sampled_<judge>`; a pairwise judge such as PairRM scores each response
by its margin over the SFT policy's greedy response), the win rate of greedy responses against the SFT
policy's greedy responses (same judge, ties count half) and its length-controlled version (lc_win_rate_vs_sft,
alignloop/methods/length_control.py), mean response lengths in tokens, the mean token entropy of
sampled responses, and the KL to the SFT policy on the policy's own samples, mean of log π_i(y|x) − log π_0(y|x).
On the testbed also exact match, and the gold score when another judge ranks. Greedy responses are exported in
AlpacaEval's format for external evaluators.
Iteration 0 is the SFT policy.
"""

from __future__ import annotations

import logging
import math
from statistics import mean

import torch

from alignloop.config import Config
from alignloop.errors import NonFiniteError
from alignloop.io import atomic_path, read_jsonl, write_json, write_jsonl
from alignloop.methods.length_control import length_controlled_win_rate
from alignloop.metric_keys import score_key
from alignloop.models.backends import generate_jobs
from alignloop.models.generation import Generation, GenerationJob
from alignloop.models.logprobs import (
    collate,
    mean_token_entropy,
    text_logprob_per_token,
    to_device,
    token_logps,
    tokenize_ids,
)
from alignloop.models.losses import sequence_sum
from alignloop.models.policy import load_policy
from alignloop.models.rankers import VerifierRanker, build_ranker
from alignloop.paths import Layout, eval_split_names
from alignloop.seeds import derive_seed
from alignloop.sources.models import policy_dir, ranker_model_dir
from alignloop.stage_rows import BenchmarkRow, read_rows
from alignloop.testbed.scorer import exact_match, gold_score
from alignloop.verifiers.metrics import followed_fraction, verification_metrics

log = logging.getLogger(__name__)


def outcomes(scores: list[float], baseline_scores: list[float]) -> list[float]:
    """Per paired prompt: 1 for a win over the baseline, ½ for a tie, 0 for a loss."""
    return [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, baseline_scores, strict=True)]


def win_rate(scores: list[float], baseline_scores: list[float]) -> float:
    """P(score > baseline) + ½·P(tie), over paired prompts."""
    return mean(outcomes(scores, baseline_scores)) if scores else float("nan")


@torch.no_grad()
def sample_statistics(model, reference, tokenizer, prompts: list[str], generations: list[Generation],
                      max_length: int, batch_size: int) -> tuple[float, float | None]:
    """Mean per-token entropy of the policy along its own samples, and (with a reference) the mean of
    S(π, y|x) − S(π_ref, y|x) over them: a Monte Carlo estimate of KL(π ‖ π_ref). Sequences are batched by length
    (less padding); both are means over samples, so the order does not matter."""
    sequences = tokenize_ids(tokenizer, [(p, g.token_ids) for p, g in zip(prompts, generations)], max_length)
    order = sorted(range(len(sequences)), key=lambda k: len(sequences[k].prompt_ids) + len(sequences[k].response_ids))
    entropies, log_ratios = [], []
    for start in range(0, len(order), batch_size):
        batch = to_device(collate([sequences[k] for k in order[start:start + batch_size]], tokenizer.pad_token_id),
                          model.device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        entropies.append(mean_token_entropy(logits, batch["response_mask"]))
        if reference is not None:
            policy_logps, mask = token_logps(logits, batch["input_ids"], batch["response_mask"])
            ref_logits = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            ref_logps, _ = token_logps(ref_logits, batch["input_ids"], batch["response_mask"])
            log_ratios.append(sequence_sum(policy_logps, mask) - sequence_sum(ref_logps, mask))
    entropy = torch.cat(entropies).mean().item()
    return entropy, (torch.cat(log_ratios).mean().item() if log_ratios else None)


def margins_over(judge, prompts: list[str], responses: list[str], anchors: list[str]) -> list[float]:
    """A pairwise judge's margin of each response over its anchor; an identical response ties (0) exactly."""
    differ = [k for k, (text, anchor) in enumerate(zip(responses, anchors)) if text != anchor]
    margins = [0.0] * len(responses)
    judged = judge.compare([prompts[k] for k in differ], [responses[k] for k in differ], [anchors[k] for k in differ])
    for k, margin in zip(differ, judged):
        margins[k] = margin
    return margins


def alpaca_eval_rows(rows: list[dict], greedy: list[list[Generation]], generator: str, dataset: str) -> list[dict]:
    return [{"instruction": row["prompt"], "output": gens[0].text, "generator": generator, "dataset": dataset}
            for row, gens in zip(rows, greedy)]


def benchmark_jobs(cfg: Config, split: str, rows: list[dict]) -> list[GenerationJob]:
    """A split's two jobs: greedy, then `benchmark.num_samples` sampled responses per prompt."""
    bench, prompts, ids = cfg.benchmark, [row["prompt"] for row in rows], [row["prompt_id"] for row in rows]
    return [GenerationJob(prompts, ids, greedy=True, max_new_tokens=bench.max_new_tokens,
                          description=f"benchmark {split} greedy"),
            GenerationJob(prompts, ids, greedy=False, max_new_tokens=bench.max_new_tokens,
                          num_samples=bench.num_samples, temperature=bench.sampled_temperature,
                          seed=derive_seed(cfg.seed, "benchmark", split), description=f"benchmark {split} sampled")]


def run_benchmark(cfg: Config, layout: Layout, iteration: int) -> None:
    bench = cfg.benchmark
    source = policy_dir(cfg, layout, iteration)
    splits = {split: read_jsonl(layout.eval_prompts(split)) for split in eval_split_names(cfg)}
    generated = {}
    if bench.backend == "vllm":  # one engine for every split, before this process loads a model (a GPU to itself)
        jobs = [job for split, rows in splits.items() for job in benchmark_jobs(cfg, split, rows)]
        results = generate_jobs(cfg, layout.root, source, jobs, "vllm", bench.batch_size)
        generated = {split: (results[2 * k], results[2 * k + 1]) for k, split in enumerate(splits)}
    model, tokenizer = load_policy(source, cfg.model)
    reference = load_policy(policy_dir(cfg, layout, 0), cfg.model, model.device)[0] if iteration else None
    judge = build_ranker(cfg, ranker_model_dir(cfg, layout))
    sft_rows = [] if iteration == 0 else read_rows(layout.benchmark_outputs(0), BenchmarkRow)
    baseline = {(row["split"], row["prompt_id"]): row["greedy_score"] for row in sft_rows}
    baseline_lengths = {(row["split"], row["prompt_id"]): row["greedy_tokens"] for row in sft_rows}
    anchor_texts = {(row["split"], row["prompt_id"]): row["greedy"] for row in sft_rows}
    metrics: dict[str, float] = {}
    outputs: list[BenchmarkRow] = []
    exports: dict[str, list[dict]] = {}
    all_scores, all_baseline, all_lengths, all_baseline_lengths = [], [], [], []
    for split, rows in splits.items():
        prompts, ids = [row["prompt"] for row in rows], [row["prompt_id"] for row in rows]
        greedy, sampled = generated.get(split) or generate_jobs(
            cfg, layout.root, source, benchmark_jobs(cfg, split, rows), bench.backend, bench.batch_size,
            loaded=(model, tokenizer))
        flat_prompts = [row["prompt"] for row, gens in zip(rows, sampled) for _ in gens]
        flat_samples = [g for gens in sampled for g in gens]
        verdicts: list[dict] = [{} for _ in rows]  # per prompt: the checkers' verdicts, with the verifier
        if getattr(judge, "pairwise", False):  # each response against the SFT policy's greedy one, both orders
            anchors = [anchor_texts.get((split, pid), gens[0].text) for pid, gens in zip(ids, greedy)]
            greedy_scores = margins_over(judge, prompts, [gens[0].text for gens in greedy], anchors)
            margins = iter(margins_over(judge, flat_prompts, [g.text for g in flat_samples],
                                        [a for a, gens in zip(anchors, sampled) for _ in gens]))
            sampled_scores = [[next(margins) for _ in gens] for gens in sampled]
            baseline_scores = [0.0] * len(rows)  # the SFT response against itself
        elif judge.name == "verifier":  # the checkers' verdicts: scores, and IFEval's accuracies
            greedy_checks = [checks[0] for checks in judge.check(rows, [[gens[0].text] for gens in greedy])]
            sampled_checks = judge.check(rows, [[g.text for g in gens] for gens in sampled])
            greedy_scores = [followed_fraction(checks) for checks in greedy_checks]
            sampled_scores = [[followed_fraction(checks) for checks in per] for per in sampled_checks]
            baseline_scores = [baseline.get((split, pid), score) for pid, score in zip(ids, greedy_scores)]
            metrics |= verification_metrics(split, greedy_checks, sampled_checks)
            verdicts = [{"instruction_id_list": row["instruction_id_list"],
                         "greedy_checks": [list(check) for check in checks]}
                        for row, checks in zip(rows, greedy_checks)]
        else:
            greedy_scores = [scores[0] for scores in judge.score(rows, [[gens[0].text] for gens in greedy])]
            sampled_scores = judge.score(rows, [[g.text for g in gens] for gens in sampled])
            baseline_scores = [baseline.get((split, pid), score) for pid, score in zip(ids, greedy_scores)]
        if cfg.data.is_verifiable and judge.name != "verifier":  # the checkers next to a learned judge's opinion
            truth = VerifierRanker()
            greedy_checks = [checks[0] for checks in truth.check(rows, [[gens[0].text] for gens in greedy])]
            metrics |= verification_metrics(split, greedy_checks,
                                            truth.check(rows, [[g.text for g in gens] for gens in sampled]))
            verdicts = [{"instruction_id_list": row["instruction_id_list"],
                         "greedy_checks": [list(check) for check in checks]}
                        for row, checks in zip(rows, greedy_checks)]
        lengths = [gens[0].num_tokens for gens in greedy]
        sft_lengths = [baseline_lengths.get((split, pid), n) for pid, n in zip(ids, lengths)]
        entropy, kl = sample_statistics(model, reference, tokenizer, flat_prompts, flat_samples,
                                        cfg.model.max_length, bench.batch_size)
        # A set the judge cannot score (the verifier on prompts without constraints) has no score metrics.
        scored = not all(math.isnan(score) for score in greedy_scores)
        if scored:
            metrics |= {
                score_key(split, "greedy", judge.name): mean(greedy_scores),
                score_key(split, "sampled", judge.name): mean(s for scores in sampled_scores for s in scores),
                f"{split}/win_rate_vs_sft": win_rate(greedy_scores, baseline_scores),
                f"{split}/lc_win_rate_vs_sft": length_controlled_win_rate(outcomes(greedy_scores, baseline_scores),
                                                                          lengths, sft_lengths),
            }
        metrics |= {
            f"{split}/greedy_length": mean(g[0].num_tokens for g in greedy),
            f"{split}/sampled_length": mean(g.num_tokens for g in flat_samples),
            f"{split}/sampled_entropy": entropy,
            f"{split}/kl_to_sft": 0.0 if kl is None else kl,
        }
        if all("answer" in row for row in rows):  # the testbed knows the right answer
            if judge.name != "gold":  # the truth next to a learned judge's opinion (does optimising it drift?)
                metrics[score_key(split, "greedy", "gold")] = mean(gold_score(r["answer"], g[0].text)
                                                                  for r, g in zip(rows, greedy))
                metrics[score_key(split, "sampled", "gold")] = mean(gold_score(r["answer"], g.text)
                                                                   for r, gens in zip(rows, sampled) for g in gens)
            metrics[f"{split}/greedy_exact_match"] = mean(exact_match(r["answer"], g[0].text)
                                                          for r, g in zip(rows, greedy))
            metrics[f"{split}/sampled_exact_match"] = mean(exact_match(r["answer"], g.text)
                                                           for r, gens in zip(rows, sampled) for g in gens)
        if scored:
            all_scores += greedy_scores
            all_baseline += baseline_scores
            all_lengths += lengths
            all_baseline_lengths += sft_lengths
        outputs += [BenchmarkRow(split=split, prompt_id=pid, prompt=row["prompt"], **_answer(row), greedy=gens[0].text,
                                 greedy_score=_finite(score), greedy_tokens=gens[0].num_tokens,
                                 sampled=[g.text for g in samples], sampled_scores=[_finite(s) for s in s_scores],
                                 **verdict)
                    for pid, row, gens, score, samples, s_scores, verdict
                    in zip(ids, rows, greedy, greedy_scores, sampled, sampled_scores, verdicts)]
        exports[split] = alpaca_eval_rows(rows, greedy, f"alignloop-iter-{iteration}", split)
    if cfg.data.is_verifiable:  # does the policy still speak like the model it started from?
        metrics |= retention_metrics(cfg, layout, model, reference, tokenizer)
    metrics["win_rate_vs_sft"] = win_rate(all_scores, all_baseline)
    metrics["lc_win_rate_vs_sft"] = length_controlled_win_rate(outcomes(all_scores, all_baseline), all_lengths,
                                                               all_baseline_lengths)
    bad = [key for key, value in metrics.items() if not math.isfinite(value)]
    if bad and any(key.split("/")[-1].startswith(("greedy_", "sampled_")) for key in bad):
        raise NonFiniteError(f"benchmark iteration {iteration}: non-finite {bad[0]} (the judge or the policy is "
                             "broken)")
    metrics = {key: (round(value, 6) if math.isfinite(value) else None) for key, value in metrics.items()}
    write_jsonl(layout.benchmark_outputs(iteration), outputs)
    if bench.alpaca_eval:
        with atomic_path(layout.alpaca_eval(iteration)) as tmp:
            tmp.mkdir()
            for split, rows in exports.items():
                write_json(tmp / f"{split}.json", rows)
    write_json(layout.metrics(iteration), metrics)
    log.info("benchmark iteration %d: %s", iteration,
             ", ".join(f"{k}={v}" for k, v in metrics.items() if k.endswith(f"_{judge.name}")))


def _answer(row: dict) -> dict:
    return {"answer": row["answer"]} if "answer" in row else {}


def _finite(score: float) -> float | None:
    """JSON has no NaN: an unscored response (no constraint to check) is null."""
    return None if math.isnan(score) else score


def retention_metrics(cfg: Config, layout: Layout, model, reference, tokenizer) -> dict[str, float]:
    """The mean per-token log-likelihood of held-out reference answers under the policy and under policy 0, and the
    relative change: (policy − policy 0) / |policy 0|, negative when the policy forgot how people are answered."""
    rows = [(row["prompt"], row["answer"]) for row in read_jsonl(layout.reference_answers)]
    if not rows:
        return {}
    policy = text_logprob_per_token(model, tokenizer, rows, cfg.model.max_length, cfg.benchmark.batch_size)
    start = policy if reference is None else text_logprob_per_token(reference, tokenizer, rows, cfg.model.max_length,
                                                                     cfg.benchmark.batch_size)
    return {"retention_logprob_per_token": policy, "retention_start_logprob_per_token": start,
            "retention_relative_change": (policy - start) / abs(start)}
