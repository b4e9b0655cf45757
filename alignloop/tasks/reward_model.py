"""Stage `reward_model`: train a Bradley–Terry reward model once, after SFT, for `rank.ranker: reward_model`.

1) pairs: `reward.data` (read by prepare into data/preferences.jsonl), or policy 0's samples on prompts from the
   end of the pool, best vs worst by the testbed's gold scorer (`testbed.label_noise` of the training labels
   flipped) or, with data.sharegpt, by the verifier (`reward.label_noise` flipped); flips are recorded per pair and
   held-out pairs keep their true labels;
2) the ensemble: `reward.ensemble_size` plain BT models (different seeds) give each pair's preference strength
   μ and σ of r(chosen) − r(rejected);
3) the reward model: BT with `reward.denoising` fed by μ, the SimCSE term and MetaRM's meta step when configured
   (MetaRM's meta-batches are policy 0's samples: the responses the loop will rank first);
4) one directory written at once: model/ (the ranker), pairs.jsonl (split, μ, σ, flipped), stats.json (held-out
   accuracy; on the testbed, how well μ < 0 finds the flipped labels), train_log.json.
"""

from __future__ import annotations

import logging
import random

import torch

from alignloop.config import Config, ModelConfig
from alignloop.config.reward import RewardConfig
from alignloop.errors import InputError
from alignloop.io import atomic_path, read_jsonl, write_json, write_jsonl
from alignloop.methods.pairing import build_pairs
from alignloop.models.device import resolve_device
from alignloop.models.distributed import make_accelerator
from alignloop.models.generation import generate
from alignloop.models.policy import load_policy, load_tokenizer
from alignloop.models.reward_losses import preference_strength
from alignloop.models.reward_model import encode_pair
from alignloop.models.reward_training import pair_margins, restore_dropout, train_reward_model
from alignloop.models.training import save_policy
from alignloop.paths import Layout
from alignloop.seeds import derive_seed
from alignloop.sources.models import policy_dir, reward_init_dir

log = logging.getLogger(__name__)

GENERATION_BATCH = 256  # prompts per generate call for policy samples


def policy_samples(cfg: Config, layout: Layout, prompts: list[dict]) -> dict[str, list[dict]]:
    """prompt_id → `reward.num_samples` responses of policy 0 (the loop's first policy), seeded by the run."""
    rcfg = cfg.reward
    model, tokenizer = load_policy(policy_dir(cfg, layout, 0), cfg.model)
    generations = generate(model, tokenizer, [row["prompt"] for row in prompts], num_samples=rcfg.num_samples,
                           temperature=rcfg.temperature, max_new_tokens=rcfg.max_new_tokens,
                           batch_size=GENERATION_BATCH, seed=derive_seed(cfg.seed, "reward_model", "sample"),
                           prompt_ids=[row["prompt_id"] for row in prompts], max_length=cfg.model.max_length,
                           description="reward model: policy samples", kv_cache=cfg.model.kv_cache)
    return {row["prompt_id"]: [{"sample_index": index, "response": gen.text, "response_ids": list(gen.token_ids),
                                "finished": gen.finished} for index, gen in enumerate(gens)]
            for row, gens in zip(prompts, generations)}


def flip_some(pairs: list[dict], fraction: float, seed: int) -> list[dict]:
    """Exactly round(fraction · n) training pairs, drawn by `seed`, get chosen and rejected swapped (`flipped`)."""
    flipped = set(random.Random(seed).sample(range(len(pairs)), round(fraction * len(pairs))))
    out = []
    for index, pair in enumerate(pairs):
        if index in flipped:
            pair = {**pair, "chosen": pair["rejected"], "rejected": pair["chosen"],
                    "chosen_score": pair["rejected_score"], "rejected_score": pair["chosen_score"]}
        out.append({**pair, "flipped": index in flipped})
    return out


def label_pairs(prompts: list[dict], samples: dict[str, list[dict]], scores: dict[str, list[float]], held: int,
                noise: float, seed: int, drop_unfinished: bool) -> list[dict]:
    """Best-vs-worst pairs of each prompt's scored samples: the first `held` prompts' pairs held out with true
    labels ("eval"), the rest for training with round(noise · n) labels flipped (recorded per pair)."""
    pairs = {}
    for split, rows in (("eval", prompts[:held]), ("train", prompts[held:])):
        built, _ = build_pairs(rows, samples, scores, drop_unfinished=drop_unfinished)
        pairs[split] = [{"pair_id": p["pair_id"], "prompt_id": p["prompt_id"], "prompt": p["prompt"],
                         "chosen": p["chosen"], "rejected": p["rejected"], "chosen_score": p["chosen_score"],
                         "rejected_score": p["rejected_score"], "split": split} for p in built]
    return flip_some(pairs["train"], noise, seed) + [{**pair, "flipped": False} for pair in pairs["eval"]]


def own_pairs(cfg: Config, layout: Layout) -> tuple[list[dict], dict[str, list[dict]]]:
    """Pairs of policy 0's samples on prompts from the end of the pool (the iterations take slices from its start),
    labelled by the testbed's gold scorer or, with data.sharegpt, by the verifier; and those samples per prompt.
    The first `reward.eval_prompts` prompts are held out, labels true."""
    rcfg = cfg.reward
    pool = read_jsonl(layout.train_prompts)
    count = min(len(pool), rcfg.num_prompts + rcfg.eval_prompts)
    if count < 2:
        raise InputError(f"reward_model: the prompt pool has {len(pool)} prompts; it needs at least 2 (one to train "
                         "on, one held out)")
    prompts = pool[len(pool) - count:]
    samples = policy_samples(cfg, layout, prompts)
    if cfg.data.is_verifiable:  # the fraction of the prompt's constraints followed, as `rank.ranker: verifier`
        from alignloop.models.rankers import VerifierRanker

        scored = VerifierRanker().score(prompts, [[s["response"] for s in samples[row["prompt_id"]]]
                                                  for row in prompts])
        scores = {row["prompt_id"]: list(values) for row, values in zip(prompts, scored)}
        noise, drop_unfinished = rcfg.label_noise, cfg.rank.drop_unfinished
    else:
        from alignloop.testbed.scorer import gold_score

        scores = {pid: [gold_score(row["answer"], s["response"]) for s in samples[pid]]
                  for row in prompts for pid in [row["prompt_id"]]}
        noise, drop_unfinished = cfg.testbed.label_noise, True  # a cut response has no ending
    held = min(rcfg.eval_prompts, count // 2)
    return label_pairs(prompts, samples, scores, held, noise, derive_seed(cfg.seed, "label_noise"),
                       drop_unfinished), samples


def encode_pairs(tokenizer, rows: list[dict], max_length: int) -> list[tuple[list[int], list[int]]]:
    """Each row's (chosen, rejected) in the reward model's template, cut to `max_length` tokens (counted)."""
    encoded = [(encode_pair(tokenizer, row["prompt"], row["chosen"]), encode_pair(tokenizer, row["prompt"],
                                                                                   row["rejected"])) for row in rows]
    cut = sum(len(ids) > max_length for pair in encoded for ids in pair)
    if cut:
        log.warning("reward_model: %d of %d responses exceed model.max_length (%d tokens) and were cut", cut,
                    2 * len(encoded), max_length)
    return [(chosen[:max_length], rejected[:max_length]) for chosen, rejected in encoded]


def meta_batches(tokenizer, train_rows: list[dict], samples: dict[str, list[dict]], max_length: int
                 ) -> list[list[list[int]]]:
    """MetaRM's groups: for each training prompt, its policy responses formatted for the reward model."""
    prompts = {row["prompt_id"]: row["prompt"] for row in train_rows}
    return [[encode_pair(tokenizer, prompt, sample["response"])[:max_length] for sample in samples[pid]]
            for pid, prompt in prompts.items() if pid in samples]


def ensemble_strength(init, tokenizer, train_pairs: list, eval_pairs: list, rcfg: RewardConfig,
                      model_cfg: ModelConfig, seed: int, accelerator=None
                      ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """μ and σ of r(chosen) − r(rejected) per training pair over `reward.ensemble_size` plain Bradley–Terry models
    (seeds derived from `seed`), and each member's held-out accuracy."""
    margins, members_eval = [], []
    for member in range(rcfg.ensemble_size):
        trained = train_reward_model(init, tokenizer, train_pairs, rcfg, model_cfg,
                                     derive_seed(seed, "reward_ensemble", member), denoise=False,
                                     description=f"reward ensemble {member + 1}/{rcfg.ensemble_size}",
                                     accelerator=accelerator)
        margins.append(pair_margins(trained.model, train_pairs, tokenizer.pad_token_id, rcfg.batch_size,
                                    f"reward ensemble {member + 1}: margins"))
        members_eval.append(accuracy(pair_margins(trained.model, eval_pairs, tokenizer.pad_token_id,
                                                  rcfg.batch_size, f"reward ensemble {member + 1}: held-out")))
    strength, spread = preference_strength(torch.stack(margins), unbiased=rcfg.ensemble_size > 1)
    return strength, spread, members_eval


def detection(flagged: list[bool], flipped: list[bool]) -> dict[str, float | int]:
    """How well "μ < 0" finds the flipped labels: precision and recall (None when undefined)."""
    hits = sum(f and g for f, g in zip(flagged, flipped))
    return {"flipped": sum(flipped), "flagged": sum(flagged), "flagged_and_flipped": hits,
            "precision": hits / sum(flagged) if any(flagged) else None,
            "recall": hits / sum(flipped) if any(flipped) else None}


def accuracy(margins: torch.Tensor) -> float:
    """Share of pairs where the chosen response gets the higher reward (ties count half)."""
    return ((margins > 0).double() + 0.5 * (margins == 0).double()).mean().item() if len(margins) else float("nan")


def run_reward_model(cfg: Config, layout: Layout) -> None:
    rcfg = cfg.reward
    # Under `accelerate launch` every process runs this stage: each trains on its share of every batch (the margins
    # and policy samples are computed whole in each), and the main process writes.
    accelerator = make_accelerator(resolve_device(cfg.model.device))
    launched = accelerator if accelerator.num_processes > 1 else None
    init = reward_init_dir(cfg, layout)
    tokenizer = load_tokenizer(init, cfg.model)  # chat template and EOS checked; pad falls back to EOS
    if rcfg.data is None:
        rows, samples = own_pairs(cfg, layout)
    else:
        rows = read_jsonl(layout.preferences)
        samples = {}
        if rcfg.metarm:  # the policy's own responses on the training prompts
            prompts = list({row["prompt_id"]: row for row in rows if row["split"] == "train"}.values())
            samples = policy_samples(cfg, layout, prompts[: rcfg.num_prompts])
    train_rows = [row for row in rows if row["split"] == "train"]
    eval_rows = [row for row in rows if row["split"] == "eval"]
    if not train_rows or not eval_rows:
        raise InputError(f"reward_model: {len(train_rows)} training and {len(eval_rows)} held-out pairs; both must "
                         "be non-empty (more prompts, or fewer ties)")
    pad_id = tokenizer.pad_token_id
    train_pairs = encode_pairs(tokenizer, train_rows, cfg.model.max_length)
    eval_pairs = encode_pairs(tokenizer, eval_rows, cfg.model.max_length)
    meta_groups = meta_batches(tokenizer, train_rows, samples, cfg.model.max_length) if rcfg.metarm else None
    log.info("reward_model: %d training pairs (%d flipped), %d held out; ensemble of %d, denoising %s%s%s%s",
             len(train_rows), sum(row.get("flipped", False) for row in train_rows), len(eval_rows),
             rcfg.ensemble_size, rcfg.denoising, ", SimCSE" if rcfg.contrastive_weight else "",
             ", MetaRM" if rcfg.metarm else "", f"; {accelerator.num_processes} processes "
             f"({accelerator.distributed_type.value})" if launched else "")

    # 2) the ensemble's preference strength on the training pairs
    strength = spread = None
    members_eval: list[float] = []
    if rcfg.ensemble_size:
        strength, spread, members_eval = ensemble_strength(init, tokenizer, train_pairs, eval_pairs, rcfg, cfg.model,
                                                           cfg.seed, launched)

    # 3) the reward model
    final = train_reward_model(init, tokenizer, train_pairs, rcfg, cfg.model, derive_seed(cfg.seed, "reward_model"),
                               strength=strength, meta_groups=meta_groups, description="reward model",
                               accelerator=launched)
    if not accelerator.is_main_process:
        return
    eval_margins = pair_margins(final.model, eval_pairs, pad_id, rcfg.batch_size, "reward model: held-out")
    train_margins = pair_margins(final.model, train_pairs, pad_id, rcfg.batch_size, "reward model: training")

    # 4) one directory, swapped in whole
    flipped = [bool(row.get("flipped", False)) for row in train_rows]
    true_direction = torch.tensor([-1.0 if f else 1.0 for f in flipped], dtype=torch.float64)
    noise = None if rcfg.data is not None else rcfg.label_noise if cfg.data.is_verifiable else cfg.testbed.label_noise
    stats = {"train_pairs": len(train_rows), "eval_pairs": len(eval_rows), "label_noise": noise,
             "eval_accuracy": accuracy(eval_margins),
             "train_accuracy_given_labels": accuracy(train_margins),
             "train_accuracy_true_labels": accuracy(train_margins * true_direction),
             "ensemble_eval_accuracy": members_eval, "denoising": rcfg.denoising}
    if strength is not None:
        flagged = (strength < 0).tolist()
        stats |= {"mean_strength": strength.mean().item(), "negative_strength_fraction": sum(flagged) / len(flagged),
                  "mean_strength_std": spread.mean().item()}
        if rcfg.data is None:
            stats["detection"] = detection(flagged, flipped)
    pair_rows = [{**row, **({"strength": round(strength[k].item(), 6), "strength_std": round(spread[k].item(), 6)}
                            if strength is not None else {}),
                  "margin": round(train_margins[k].item(), 6)} for k, row in enumerate(train_rows)]
    pair_rows += [{**row, "margin": round(eval_margins[k].item(), 6)} for k, row in enumerate(eval_rows)]
    restore_dropout(final.model, init, cfg.model)
    with atomic_path(layout.reward_outputs) as tmp:
        save_policy(final.model, tokenizer, tmp / layout.reward_model.name, "reward model")
        write_jsonl(tmp / layout.reward_pairs.name, pair_rows)
        write_json(tmp / layout.reward_stats.name, stats)
        write_json(tmp / layout.reward_train_log.name, {"steps": len(final.history), "history": final.history})
    log.info("reward_model: held-out accuracy %.3f (ensemble members %s)%s", stats["eval_accuracy"],
             ", ".join(f"{a:.3f}" for a in members_eval) or "none",
             f"; μ < 0 flags {stats['detection']['flagged']} pairs, precision {stats['detection']['precision']}, "
             f"recall {stats['detection']['recall']}" if "detection" in stats else "")
