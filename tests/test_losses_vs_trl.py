"""Our DPO, IPO, cDPO and SimPO against TRL 1.16's own implementations on identical inputs (within 1e-5)."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from alignloop.models.logprobs import Tokenized, collate, token_logps
from alignloop.models.losses import (
    LOSSES,
    LossParams,
    PairBatch,
)

# ---------------------------------------------------------------- TRL 1.16 parity
#
# DPO and IPO: `trl.trainer.dpo_trainer.DPOTrainer._compute_loss(self, model, inputs, return_outputs)`, the whole
# loss path of TRL's DPO trainer, with loss_type "sigmoid" and "ipo", called unbound on a stand-in `self`: a tiny
# random Llama with TRL's fused LM head (`trl.trainer.utils.add_fused_lm_head`) as policy and another as reference,
# so TRL computes its own per-token log-probs (shift, label masking, token-summing, IPO's per-token averaging).
# cDPO and SimPO: `trl.experimental.cpo.CPOTrainer.cpo_loss` (loss_type "sigmoid" with label_smoothing ε, and
# "simpo"), on sequence log-probs from `CPOTrainer.get_batch_logps` (token sums for cDPO, fed the log-ratios ρ so
# that its logits are h; token means for SimPO). TRL 1.16's DPOTrainer has no label-smoothed sigmoid any more.

PAIRS = [(Tokenized([1, 5, 6], [7, 8, 9, 2]), Tokenized([1, 5, 6], [10, 2])),
         (Tokenized([1, 11], [12, 13, 2]), Tokenized([1, 11], [14, 15, 16, 17, 2])),
         (Tokenized([1, 18, 19, 20], [2]), Tokenized([1, 18, 19, 20], [21, 22, 2]))]


@pytest.fixture(scope="module")
def tiny_models():
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).double().eval()
        torch.nn.init.normal_(model.lm_head.weight, std=1.0)  # margins of a few nats, not ~0
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
        models.append(model)
    batch = collate([c for c, _ in PAIRS] + [r for _, r in PAIRS], pad_id=0)  # chosen rows, then rejected rows
    return models[0], models[1], batch


def _ours(policy, reference, batch) -> PairBatch:
    logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps, mask = token_logps(logits, batch["input_ids"], batch["response_mask"])
    with torch.no_grad():
        ref_logits = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        ref_logps, _ = token_logps(ref_logits, batch["input_ids"], batch["response_mask"])
    n = len(PAIRS)
    return PairBatch(logps[:n], logps[n:], mask[:n], mask[n:], ref_logps[:n], ref_logps[n:])


def _grads(model) -> torch.Tensor:
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # inside TRL
@pytest.mark.parametrize("loss_type,name", [("sigmoid", "dpo"), ("ipo", "ipo")])
def test_dpo_and_ipo_match_trl_dpo_trainer(tiny_models, loss_type, name):
    from trl.trainer.dpo_trainer import DPOTrainer

    policy, reference, batch = tiny_models
    beta = 0.2
    stand_in = SimpleNamespace(
        model=policy, ref_model=reference, args=SimpleNamespace(gradient_checkpointing_kwargs=None),
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather=lambda t: t, gather_for_metrics=lambda t: t),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=False, f_divergence_type="reverse_kl",
        loss_types=[loss_type], loss_weights=[1.0], beta=beta, use_weighting=False, label_smoothing=0.0,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
              "completion_mask": batch["response_mask"].long()}
    trl_loss = DPOTrainer._compute_loss(stand_in, policy, inputs, return_outputs=False)
    trl_loss.backward()
    trl_grads = _grads(policy)

    # IPO's β is TRL's τ; report the implicit rewards on the same β so TRL's logged reward metrics compare too.
    out = LOSSES[name].fn(_ours(policy, reference, batch), LossParams(beta=beta, ipo_tau=beta))
    out.losses.mean().backward()
    assert out.losses.mean().item() == pytest.approx(trl_loss.item(), abs=1e-5)
    assert out.losses.mean().item() > 0.01  # not a degenerate comparison
    assert torch.allclose(_grads(policy), trl_grads, atol=1e-5)
    logged = stand_in._metrics["eval"]
    assert out.metrics["reward_margin"].item() == pytest.approx(logged["rewards/margins"][0], abs=1e-5)
    assert out.metrics["reward_accuracy"].item() == pytest.approx(logged["rewards/accuracies"][0], abs=1e-5)
    assert out.chosen_rewards.mean().item() == pytest.approx(logged["rewards/chosen"][0], abs=1e-5)


def _cpo(loss_type: str, beta: float, label_smoothing: float = 0.0, simpo_gamma: float = 0.0):
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    stand_in = SimpleNamespace(alpha=0.0, loss_type=loss_type, beta=beta, label_smoothing=label_smoothing,
                               simpo_gamma=simpo_gamma, accelerator=SimpleNamespace(device=torch.device("cpu")))
    return CPOTrainer, stand_in


def _trl_sequence_logps(model, batch, average: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    labels = batch["input_ids"].masked_fill(~batch["response_mask"], -100)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps = CPOTrainer.get_batch_logps(logits, labels, average_log_prob=average)
    return logps[: len(PAIRS)], logps[len(PAIRS):]


def test_cdpo_matches_trl_label_smoothed_sigmoid(tiny_models):
    policy, reference, batch = tiny_models
    beta, eps = 0.2, 0.15
    cpo_trainer, stand_in = _cpo("sigmoid", beta, label_smoothing=eps)
    policy_chosen, policy_rejected = _trl_sequence_logps(policy, batch, average=False)
    with torch.no_grad():
        reference_chosen, reference_rejected = _trl_sequence_logps(reference, batch, average=False)
    # cpo_loss's logits are chosen − rejected; fed ρ_w and ρ_l they are h, and its loss is cDPO's.
    trl_losses, _, _ = cpo_trainer.cpo_loss(stand_in, policy_chosen - reference_chosen,
                                            policy_rejected - reference_rejected)
    out = LOSSES["cdpo"].fn(_ours(policy, reference, batch), LossParams(beta=beta, label_smoothing=eps))
    assert torch.allclose(out.losses.double(), trl_losses, atol=1e-5, rtol=0)
    policy.zero_grad(set_to_none=True)


def test_simpo_matches_trl_cpo_simpo(tiny_models):
    policy, reference, batch = tiny_models
    params = LossParams(simpo_beta=2.0, simpo_gamma_ratio=0.5)
    cpo_trainer, stand_in = _cpo("simpo", params.simpo_beta, simpo_gamma=params.simpo_gamma)  # TRL's γ is absolute
    trl_losses, trl_chosen, trl_rejected = cpo_trainer.cpo_loss(stand_in, *_trl_sequence_logps(policy, batch, True))
    trl_losses.mean().backward()
    trl_grads = _grads(policy)
    ours = _ours(policy, reference, batch)
    ours = PairBatch(ours.policy_chosen_logps, ours.policy_rejected_logps, ours.chosen_mask, ours.rejected_mask)
    out = LOSSES["simpo"].fn(ours, params)
    out.losses.mean().backward()
    assert torch.allclose(out.losses.double(), trl_losses, atol=1e-5, rtol=0)
    assert torch.allclose(out.chosen_rewards.double(), trl_chosen, atol=1e-5, rtol=0)
    assert torch.allclose(out.rejected_rewards.double(), trl_rejected, atol=1e-5, rtol=0)
    assert torch.allclose(_grads(policy), trl_grads, atol=1e-5)
