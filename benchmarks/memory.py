"""Peak memory of an optimize step under full fine-tuning, gradient checkpointing, micro-batches and LoRA.

A step as the optimize stage runs it, through the stage's own code: DPO + the NLL anchor, the reference's sequence
sums precomputed first (`build_terms`: `sequence_sums` → `ReferenceSums`, `PreferenceTerm`, `NLLTerm`), then per step
`train_step` (forward and backward over the micro-batches), gradient clipping and an AdamW step over the trainable
parameters. The policy is a random Qwen2-style causal LM built from a config (default: ~30M parameters, tied
embeddings), wrapped by `with_lora` and `enable_gradient_checkpointing` as the stage does, on random token ids: each
sequence a 32-token prompt and the rest of `--tokens` as the response, `--pairs` pairs in one batch.

Each variant runs in its own process. The figure is the growth of peak RSS (`ru_maxrss`) over the RSS once the model
and the batch exist, so the weights cancel out; the reference pass, activations, logits, gradients and AdamW's state
are all in it. It is taken over `--steps` steps (default 2): AdamW allocates its state in the first step's
`optimizer.step()`, after that step's activations are gone, so only from the second step on is the state live during
a forward and backward, as in every step of a run but the first. `first step` is the figure after step 1 alone,
`reference` after the reference sums alone (the stage's first phase).

RSS counts what the C allocator holds, not only live tensors. glibc's malloc keeps freed blocks below its (growing)
mmap threshold in its heaps, where fragmentation can hold them for the whole process; by default (`--malloc mmap`) the
children run with MALLOC_MMAP_THRESHOLD_=65536, so every tensor of 64 KiB or more is its own mapping, returned on
free, and RSS follows live memory. `--malloc glibc` measures glibc's defaults instead (what a plain CPU run resides in).

    python benchmarks/memory.py                      # 8 pairs × 512 tokens, 8 layers × 512 wide
    python benchmarks/memory.py --tokens 256 --pairs 4 --layers 4 --hidden 256 --malloc glibc

Target: LoRA + gradient checkpointing at most 0.4× the step memory of full fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

PROMPT_TOKENS = 32
PAD_ID = 0
TARGET = 0.4
MMAP_THRESHOLD = 65536  # bytes: --malloc mmap
LORA = {"r": 16, "alpha": 32, "target_modules": "all-linear"}
# name: (LoRA, gradient checkpointing, micro_batch_size)
VARIANTS = {
    "full": (False, False, None),
    "full+checkpointing": (False, True, None),
    "full+micro2": (False, False, 2),
    "lora": (True, False, None),
    "lora+checkpointing": (True, True, None),
    "lora+checkpointing+micro2": (True, True, 2),
}


def rss_mib() -> float:
    """Resident set size now (not the peak), from /proc."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def build_model(layers: int, hidden: int, vocab: int, tokens: int):
    """A random Qwen2-style causal LM: heads of 64, SwiGLU of ~2.69× the width, tied embeddings."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    heads = max(1, hidden // 64)
    config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=round(hidden * 2.6875 / 16) * 16,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max(1024, tokens), tie_word_embeddings=True,
                         bos_token_id=PAD_ID, eos_token_id=PAD_ID, pad_token_id=PAD_ID)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).eval()


def random_pairs(count: int, tokens: int, vocab: int) -> list:
    """Pairs of (prompt, response) token ids, every sequence exactly `tokens` long (no padding)."""
    import torch

    from alignloop.models.logprobs import Tokenized

    generator = torch.Generator().manual_seed(1)

    def ids(length: int) -> list[int]:
        return torch.randint(1, vocab, (length,), generator=generator).tolist()

    pairs = []
    for _ in range(count):
        prompt = ids(PROMPT_TOKENS)
        pairs.append((Tokenized(prompt, ids(tokens - PROMPT_TOKENS)), Tokenized(prompt, ids(tokens - PROMPT_TOKENS))))
    return pairs


def stage_config(lora: bool, checkpointing: bool, micro: int | None, pairs: int, tokens: int):
    from alignloop.config import Config

    return Config.model_validate({
        "model": {"max_length": tokens, "gradient_checkpointing": checkpointing},
        "optimize": {"loss": "dpo", "nll_weight": 1.0, "batch_size": pairs, "micro_batch_size": micro,
                     "lora": LORA if lora else None}})


def measure(name: str, args: argparse.Namespace) -> dict:
    """Build the variant's policy and batch, run `--steps` optimize steps, and report the growth of peak RSS."""
    from types import SimpleNamespace

    import torch

    from alignloop.models.losses import LOSSES
    from alignloop.models.training import causal_lm, enable_gradient_checkpointing, with_lora
    from alignloop.paths import Layout
    from alignloop.tasks.optimize import build_terms, train_step

    if args.threads:
        torch.set_num_threads(args.threads)
    lora, checkpointing, micro = VARIANTS[name]
    cfg = stage_config(lora, checkpointing, micro, args.pairs, args.tokens)
    opt = cfg.optimize
    model = build_model(args.layers, args.hidden, args.vocab, args.tokens)
    parameters = sum(p.numel() for p in model.parameters())
    pairs = random_pairs(args.pairs, args.tokens, args.vocab)
    # 2) the policy, as run_optimize builds it
    policy = with_lora(model, opt.lora, seed=0)
    if cfg.model.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
        if not causal_lm(policy).is_activation_checkpointing:
            raise RuntimeError(f"{name}: gradient checkpointing is not on")
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=opt.learning_rate, weight_decay=0.0)  # state comes with step()
    baseline, baseline_peak = rss_mib(), peak_mib()  # model, adapter and batch built; nothing run

    start = time.perf_counter()
    # 3) the objective: the reference's sums before the first step (the LoRA policy's adapter-disabled base)
    terms, _ = build_terms(cfg, Layout(), 1, [], pairs, policy, SimpleNamespace(pad_token_id=PAD_ID))
    reference_peak, reference_seconds = peak_mib(), time.perf_counter() - start
    # 4) steps, as run_optimize runs them (one batch of every pair)
    policy.train()
    losses, step_peaks, step_seconds = [], [], []
    for _ in range(args.steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss, _ = train_step(policy, terms, pairs, list(range(len(pairs))), opt, PAD_ID, LOSSES[opt.loss].needs_kl)
        torch.nn.utils.clip_grad_norm_(trainable, opt.max_grad_norm)
        optimizer.step()
        step_seconds.append(time.perf_counter() - start)
        step_peaks.append(peak_mib())
        losses.append(loss.item())
    if not all(map(math.isfinite, losses)):
        raise FloatingPointError(f"{name}: losses {losses}")
    return {"variant": name, "lora": lora, "gradient_checkpointing": checkpointing, "micro_batch_size": micro,
            "parameters": parameters,
            "trainable_parameters": sum(p.numel() for p in trainable), "terms": [term.name for term in terms],
            "losses": losses, "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
            "baseline_rss_mib": baseline, "baseline_peak_mib": baseline_peak, "peak_mib": step_peaks[-1],
            "reference_mib": reference_peak - baseline, "first_step_mib": step_peaks[0] - baseline,
            "step_mib": step_peaks[-1] - baseline, "reference_seconds": reference_seconds,
            "step_seconds": step_seconds, "seconds": sum(step_seconds) / len(step_seconds)}


def child_command(name: str, args: argparse.Namespace) -> list[str]:
    return [sys.executable, __file__, "--only", name, "--tokens", str(args.tokens), "--pairs", str(args.pairs),
            "--layers", str(args.layers), "--hidden", str(args.hidden), "--vocab", str(args.vocab),
            "--threads", str(args.threads), "--steps", str(args.steps)]


def run_variant(name: str, args: argparse.Namespace) -> dict:
    """One variant in a fresh process, so no other variant's peak is in its figure."""
    env = dict(os.environ)
    if args.malloc == "mmap":
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    else:
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
    done = subprocess.run(child_command(name, args), capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"variant {name} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(rows: dict[str, dict]) -> None:
    full = rows["full"]["step_mib"]
    print(f"{'variant':<27}{'step MiB':>10}{'× full':>8}{'first step':>12}{'reference':>11}{'trainable':>12}"
          f"{'s/step':>8}")
    for name, row in rows.items():
        print(f"{name:<27}{row['step_mib']:>10.0f}{row['step_mib'] / full:>8.2f}{row['first_step_mib']:>12.0f}"
              f"{row['reference_mib']:>11.0f}{row['trainable_parameters']:>12,}{row['seconds']:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=512, help="tokens per sequence (32 of them the prompt)")
    parser.add_argument("--pairs", type=int, default=8, help="pairs in the batch")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512, help="width; heads of 64")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=2, help="steps measured (from 2, AdamW's state is live)")
    parser.add_argument("--malloc", choices=("mmap", "glibc"), default="mmap",
                        help="mmap: RSS follows live memory (see above); glibc: the allocator's defaults")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated; `full` is always run")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # the child process: one variant, JSON on stdout
    parser.add_argument("--out", type=Path, default=Path("reports/memory.json"))
    args = parser.parse_args()
    if args.tokens <= PROMPT_TOKENS:
        parser.error(f"--tokens must exceed the {PROMPT_TOKENS}-token prompt")
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.only:
        print(json.dumps(measure(args.only, args)))
        return

    names = ["full", *(n for n in args.variants.split(",") if n != "full")]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    rows = {name: run_variant(name, args) for name in names}
    print(f"Qwen2-style LM, {rows['full']['parameters']:,} parameters; {args.pairs} pairs × {args.tokens} tokens; "
          f"DPO + NLL with AdamW, peak over {args.steps} step(s); malloc: {args.malloc}")
    print_table(rows)
    ratio = rows["lora+checkpointing"]["step_mib"] / rows["full"]["step_mib"] if "lora+checkpointing" in rows else None
    if ratio is not None:
        print(f"LoRA + checkpointing / full fine-tuning: {ratio:.2f} (target <= {TARGET}: "
              f"{'met' if ratio <= TARGET else 'missed'})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows, "ratio": ratio,
                                    "target": TARGET}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
