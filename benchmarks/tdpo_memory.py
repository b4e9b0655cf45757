"""Peak memory of one TDPO training step against one DPO step, as the optimize stage computes them.

A random Llama-style model with a 32k vocabulary, pairs with 512-token responses. Each variant runs in its own
process; the figure is the growth of peak RSS over the RSS once the models and the batch exist, so the weights cancel
out. DPO's figure includes its reference pass (the stage precomputes reference sums once per iteration, a forward of
its own); TDPO runs the reference forward inside every step, with the chunked full-vocabulary KL (`optimize.tdpo_reference`).

    python benchmarks/tdpo_memory.py --pairs 2 --response-tokens 512 --vocab 32000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path


def one_step(loss: str, pairs: int, response_tokens: int, vocab: int, chunk: int) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignloop.models.logprobs import token_logps
    from alignloop.models.losses import LOSSES, LossParams, PairBatch, sequence_sum
    from alignloop.tasks.optimize import forward_logits, tdpo_reference

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024)
    policy, reference = LlamaForCausalLM(config), LlamaForCausalLM(config)
    reference.load_state_dict(policy.state_dict())
    reference.eval()
    prompt_tokens = 32
    input_ids = torch.randint(0, vocab, (2 * pairs, prompt_tokens + response_tokens))
    attention = torch.ones_like(input_ids)
    response_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    response_mask[:, prompt_tokens:] = True
    spec = LOSSES[loss]
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # models and batch built, nothing run
    reference_sums = None
    if spec.needs_reference and not spec.needs_kl:  # precomputed once per iteration in the stage
        with torch.no_grad():
            ref_logps, mask = token_logps(reference(input_ids=input_ids, attention_mask=attention).logits,
                                          input_ids, response_mask)
            reference_sums = sequence_sum(ref_logps, mask)

    batch = {"input_ids": input_ids, "attention_mask": attention, "response_mask": response_mask}
    logits, hidden = forward_logits(policy, batch, keep_hidden=spec.needs_kl)
    logps, mask = token_logps(logits, input_ids, response_mask)
    n = pairs
    fields = {"policy_chosen_logps": logps[:n], "policy_rejected_logps": logps[n:], "chosen_mask": mask[:n],
              "rejected_mask": mask[n:]}
    if spec.needs_kl:  # exactly the stage's computation
        ref_logps, kl = tdpo_reference(policy, reference, batch, hidden, mask, chunk)
        fields |= {"reference_chosen_logps": ref_logps[:n], "reference_rejected_logps": ref_logps[n:],
                   "chosen_kl": kl[:n], "rejected_kl": kl[n:]}
    else:
        fields |= {"reference_chosen_logps": reference_sums[:n], "reference_rejected_logps": reference_sums[n:]}
    out = spec.fn(PairBatch(**fields), LossParams())
    out.losses.mean().backward()
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
