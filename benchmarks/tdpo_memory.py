"""Peak memory of one TDPO training step against one DPO step, as the optimize stage computes them.

A random Llama-style model with a 32k vocabulary, pairs with 512-token responses. Each variant runs in its own
process; the figure is the growth of peak RSS over the RSS once the models and the batch exist, so the weights cancel
out. DPO's figure includes its reference pass (the stage precomputes reference sums once per iteration, a forward of
its own); TDPO runs the reference forward inside every step, with the chunked full-vocabulary KL (`ReferenceModel` in
models/objective.py).

    python benchmarks/tdpo_memory.py --pairs 2 --response-tokens 512 --vocab 32000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path


def random_pairs(count: int, prompt_tokens: int, response_tokens: int, vocab: int) -> list:
    """Pairs of (prompt, response) token ids of equal lengths (no padding), ids from 1 (0 is the pad id)."""
    import torch

    from alignloop.models.logprobs import Tokenized

    generator = torch.Generator().manual_seed(1)

    def ids(length: int) -> list[int]:
        return torch.randint(1, vocab, (length,), generator=generator).tolist()

    pairs = []
    for _ in range(count):
        prompt = ids(prompt_tokens)
        pairs.append((Tokenized(prompt, ids(response_tokens)), Tokenized(prompt, ids(response_tokens))))
    return pairs


def one_step(loss: str, pairs: int, response_tokens: int, vocab: int, chunk: int) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignloop.models.losses import LOSSES, LossParams
    from alignloop.models.objective import (
        PreferenceTerm,
        ReferenceModel,
        ReferenceSums,
        forward,
        objective,
        sequence_sums,
    )

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024)
    policy, reference = LlamaForCausalLM(config), LlamaForCausalLM(config)
    reference.load_state_dict(policy.state_dict())
    reference.eval()
    batch = random_pairs(pairs, 32, response_tokens, vocab)
    indices, pad_id = list(range(pairs)), 0
    spec = LOSSES[loss]
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # models and batch built, nothing run
    if spec.needs_kl:  # the reference's forward and chunked KL inside every step
        provider = ReferenceModel(reference, policy, chunk)
    else:  # precomputed once per iteration in the stage (its batches: 2 × batch_size pairs)
        provider = ReferenceSums(*sequence_sums(reference, batch, pad_id, 2 * pairs, "reference log-probs"))

    # exactly the stage's computation: one forward of the policy (hidden states kept for TDPO), the term's loss
    fwd = forward(policy, batch, indices, pad_id, keep_hidden=spec.needs_kl)
    total, _ = objective([PreferenceTerm(spec, LossParams(), [provider])], fwd)
    total.backward()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"loss": loss, "baseline_mib": baseline_kib / 1024, "peak_mib": peak_kib / 1024,
            "step_mib": (peak_kib - baseline_kib) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--response-tokens", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--only", help=argparse.SUPPRESS)  # the child process: one variant, JSON on stdout
    parser.add_argument("--out", type=Path, default=Path("reports/tdpo_memory.json"))
    args = parser.parse_args()
    if args.only:
        print(json.dumps(one_step(args.only, args.pairs, args.response_tokens, args.vocab, args.chunk)))
        return

    rows = {}
    for loss in ("dpo", "tdpo2"):
        command = [sys.executable, __file__, "--only", loss, "--pairs", str(args.pairs), "--response-tokens",
                   str(args.response_tokens), "--vocab", str(args.vocab), "--chunk", str(args.chunk)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows[loss] = json.loads(output.strip().splitlines()[-1])
    ratio = rows["tdpo2"]["step_mib"] / rows["dpo"]["step_mib"]
    print(f"{'loss':<7}{'step MiB':>10}{'peak MiB':>10}")
    for loss, row in rows.items():
        print(f"{loss:<7}{row['step_mib']:>10.0f}{row['peak_mib']:>10.0f}")
    print(f"TDPO / DPO step memory: {ratio:.2f} (target <= 1.5)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows, "ratio": ratio},
                                   indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
