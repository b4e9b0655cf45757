"""Pairs per second of our optimize stage against TRL's DPOTrainer: same model, pairs, batch size and steps.

Both start from the same saved policy, precompute the reference log-probs once (TRL: `precompute_ref_log_probs`),
and run the same number of optimizer steps with sigmoid DPO, β = 0.1, no NLL anchor. The two are timed alternately
in one process, `--repeats` times each, and the ratio of medians is reported (absolute times on shared machines are
noisy; the ratio is the figure).

    python benchmarks/dpo_throughput.py --pairs 512 --batch-size 32 --repeats 3
    python benchmarks/dpo_throughput.py --policy DIR --pairs-file artifacts/iter-1/pairs.jsonl --max-length 320 \
        --batch-size 8 --micro-batch-size 4      # a real model on a run's own pairs (e.g. SmolLM2's)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def response_ids(tokenizer, text: str) -> list[int]:
    """The ids a policy writing `text` and then stopping would have sampled (what pair rows carry)."""
    return tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]


def make_pairs(count: int, seed: int, tokenizer) -> list[dict]:
    from alignloop.config import TestbedConfig
    from alignloop.testbed.data import build_testbed_data

    prompts = build_testbed_data(TestbedConfig(sft_examples=10, prompt_pool_size=count, eval_size=10),
                                 seed)["train_prompts"]
    pairs = []
    for k, row in enumerate(prompts[:count]):
        chosen, rejected = row["answer"], row["answer"][::-1] + "!"
        pairs.append({"pair_id": f"{row['prompt_id']}-0-1", "prompt_id": row["prompt_id"], "prompt": row["prompt"],
                      "chosen": chosen, "rejected": rejected, "chosen_index": 0, "rejected_index": 1,
                      "chosen_ids": response_ids(tokenizer, chosen), "rejected_ids": response_ids(tokenizer, rejected),
                      "chosen_finished": True, "rejected_finished": True, "chosen_score": 0.85,
                      "rejected_score": 0.2})
    return pairs


def run_ours(root: Path, sft_dir: Path, pairs: list[dict], batch_size: int, epochs: float, max_length: int = 96,
             micro_batch_size: int | None = None, autocast: str = "none") -> float:
    from alignloop.config import Config
    from alignloop.io import write_jsonl
    from alignloop.paths import Layout
    from alignloop.tasks.optimize import run_optimize

    layout = Layout(root)
    if not layout.policy(0).exists():
        layout.policy(0).parent.mkdir(parents=True, exist_ok=True)
        layout.policy(0).symlink_to(sft_dir, target_is_directory=True)
    write_jsonl(layout.pairs(1), pairs)
    cfg = Config.model_validate({"model": {"max_length": max_length},
                                 "optimize": {"batch_size": batch_size, "epochs": epochs, "nll_weight": 0.0,
                                              "micro_batch_size": micro_batch_size, "autocast": autocast}})
    start = time.perf_counter()
    run_optimize(cfg, layout, 1)
    return time.perf_counter() - start


def run_trl(root: Path, sft_dir: Path, pairs: list[dict], batch_size: int, epochs: float, max_length: int = 96,
            micro_batch_size: int | None = None) -> float:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from alignloop.config import ModelConfig
    from alignloop.models.policy import load_policy

    start = time.perf_counter()  # like ours: loading both models and preparing the data count
    model, tokenizer = load_policy(sft_dir, ModelConfig(), torch.device("cpu"))
    reference, _ = load_policy(sft_dir, ModelConfig(), torch.device("cpu"))
    data = Dataset.from_dict({
        "prompt": [[{"role": "user", "content": p["prompt"]}] for p in pairs],
        "chosen": [[{"role": "assistant", "content": p["chosen"]}] for p in pairs],
        "rejected": [[{"role": "assistant", "content": p["rejected"]}] for p in pairs]})
    micro = micro_batch_size or batch_size
    args = DPOConfig(output_dir=str(root / "trl"), per_device_train_batch_size=micro,
                     gradient_accumulation_steps=batch_size // micro, num_train_epochs=epochs,
                     learning_rate=3e-4, beta=0.1, loss_type=["sigmoid"], precompute_ref_log_probs=True,
                     max_length=max_length, bf16=False, fp16=False, activation_checkpointing=False, use_cpu=True,
                     report_to="none", save_strategy="no", logging_steps=10_000, disable_tqdm=True,
                     dataloader_num_workers=0, lr_scheduler_type="cosine",
                     warmup_steps=0.1)  # a fraction: transformers 5
    trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=data,
                         processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(root / "trl-policy"))  # ours saves its policy too
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--micro-batch-size", type=int, help="pairs per forward/backward (both trainers accumulate)")
    parser.add_argument("--policy", type=Path, help="a saved policy (default: a testbed model)")
    parser.add_argument("--pairs-file", type=Path, help="a run's pairs.jsonl (default: made-up testbed pairs)")
    parser.add_argument("--max-length", type=int, default=96, help="prompt + response tokens (model.max_length)")
    parser.add_argument("--out", type=Path, default=Path("reports/dpo_throughput.json"))
    args = parser.parse_args()

    from alignloop.config import ModelConfig
    from alignloop.io import read_jsonl
    from alignloop.models.policy import load_tokenizer
    from alignloop.testbed.model import create_base_model

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sft_dir = args.policy or create_base_model(ModelConfig(), 0, root / "sft")
        pairs = (read_jsonl(args.pairs_file)[:args.pairs] if args.pairs_file
                 else make_pairs(args.pairs, 0, load_tokenizer(sft_dir, ModelConfig())))
        sizes = (args.batch_size, args.epochs, args.max_length, args.micro_batch_size)
        times: dict[str, list[float]] = {"alignloop": [], "trl": []}
        for repeat in range(args.repeats):  # alternate, so slow spells of the machine hit both
            times["alignloop"].append(run_ours(root / f"ours-{repeat}", sft_dir, pairs, *sizes))
            times["trl"].append(run_trl(root / f"trl-{repeat}", sft_dir, pairs, *sizes))
    rate = {name: len(pairs) * args.epochs / statistics.median(values) for name, values in times.items()}
    ratio = rate["alignloop"] / rate["trl"]
    print(f"{'trainer':<10}{'median s':>10}{'pairs/s':>10}")
    for name, values in times.items():
        print(f"{name:<10}{statistics.median(values):>10.2f}{rate[name]:>10.1f}")
    print(f"alignloop / TRL pairs per second: {ratio:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"policy": str(args.policy or "testbed"), "pairs": len(pairs),
                                    "max_length": args.max_length, "micro_batch_size": args.micro_batch_size,
                                    "batch_size": args.batch_size, "epochs": args.epochs,
                                    "seconds": times, "pairs_per_second": rate, "ratio": ratio}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
