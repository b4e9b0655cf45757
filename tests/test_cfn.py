"""The Coin Flipping Network counts: on synthetic states visited n times, the bonus falls with n and the pseudo-count
lands near n — and the released code's redrawn flips fail the same test."""

from __future__ import annotations

import pytest
import torch

from alignloop.models.cfn_diagnostics import neighbour_counts, ranks, spearman
from alignloop.models.coin_flipping import CFNHead, ReplayBuffer, bonuses, coin_flips, pseudo_counts, train_cfn

VISITS = (1, 2, 4, 8, 16, 32, 64)
STATES_PER_COUNT = 4  # 28 states: within what a 32-wide head can tell apart
HIDDEN, D = 96, 20


def _visited_states(seed: int = 0) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    """(states, n per state, features of every visit)."""
    generator = torch.Generator().manual_seed(seed)
    counts = [n for n in VISITS for _ in range(STATES_PER_COUNT)]
    states = torch.randn(len(counts), HIDDEN, generator=generator)
    visits = torch.cat([states[k].expand(n, HIDDEN) for k, n in enumerate(counts)])
    return states, counts, visits


def _calibrate(redraw_flips: bool, epochs: float = 400, seed: int = 0) -> tuple[float, dict[int, float]]:
    states, counts, visits = _visited_states(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    buffer = ReplayBuffer.empty(HIDDEN, D).add(visits, generator)
    head = CFNHead(HIDDEN, D, seed=seed)
    train_cfn(head, buffer, steps=round(epochs * len(buffer) / 64), batch_size=64, learning_rate=1e-3,
              generator=generator,
              redraw_flips=redraw_flips)
    bonus, counted = bonuses(head, states).tolist(), pseudo_counts(head, states)
    medians = {n: counted[[k for k, c in enumerate(counts) if c == n]].median().item() for n in VISITS}
    return spearman(bonus, [float(c) for c in counts]), medians


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert ranks([5.0, 1.0, 5.0]) == [2.5, 1.0, 2.5]


def test_neighbour_counts_by_hand():
    points = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
    queries = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    # from the origin: the two copies at 0, then (3, 4) at distance 5, then (10, 0) at 10
    assert neighbour_counts(queries, points, [0.0, 5.0, 10.0], chunk=1).tolist() == [[2, 3, 4], [1, 3, 4]]


def test_stored_flips_give_calibrated_counts():
    correlation, medians = _calibrate(redraw_flips=False)
    assert correlation <= -0.9
    for n in VISITS:
        if n <= 32:
            assert n / 2 <= medians[n] <= 2 * n, (n, medians)


def test_redrawn_flips_fail_the_same_test():
    """The released COPO code's behaviour: the target is fresh noise every step, so f → 0 for every state."""
    correlation, medians = _calibrate(redraw_flips=True)
    calibrated = correlation <= -0.9 and all(n / 2 <= medians[n] <= 2 * n for n in VISITS if n <= 32)
    assert not calibrated
    assert min(medians[n] / n for n in VISITS if n <= 8) > 2  # every rare state looks visited many times


def test_flips_are_fair_and_stored_once():
    generator = torch.Generator().manual_seed(0)
    flips = coin_flips(20_000, D, generator)
    assert set(flips.unique().tolist()) == {-1.0, 1.0}
    assert flips.mean().abs() < 0.01
    buffer = ReplayBuffer.empty(4, D).add(torch.zeros(3, 4), generator)
    grown = buffer.add(torch.ones(2, 4), generator)
    assert len(grown) == 5 and torch.equal(grown.flips[:3], buffer.flips)  # earlier visits keep their flips


def test_scoring_is_deterministic_with_dropout_in_the_head():
    head = CFNHead(HIDDEN, D, dropout=0.5)
    head.train()
    features = torch.randn(8, HIDDEN, generator=torch.Generator().manual_seed(0))
    assert torch.equal(bonuses(head, features), bonuses(head, features))  # eval() inside: dropout off


def test_prior_gives_novel_states_a_bonus():
    features = torch.randn(64, HIDDEN, generator=torch.Generator().manual_seed(0))
    plain, optimistic = CFNHead(HIDDEN, D), CFNHead(HIDDEN, D, prior_scale=1.0)
    assert bonuses(optimistic, features).mean() > 2 * bonuses(plain, features).mean()
    assert bonuses(optimistic, features).mean() == pytest.approx(1.0, rel=0.5)


def test_training_does_not_depend_on_the_global_rng_and_leaves_it_alone():
    """Dropout draws from the global RNG; a head trained after other work in the process (a resumed run trains the
    cfn stage in a fresh one) must come out the same."""
    features = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))

    def trained(global_seed: int) -> tuple[dict, torch.Tensor]:
        generator = torch.Generator().manual_seed(1)
        head = CFNHead(8, 4, width=16, dropout=0.5, seed=2)
        torch.manual_seed(global_seed)
        train_cfn(head, ReplayBuffer.empty(8, 4).add(features, generator), steps=20, batch_size=16,
                  learning_rate=1e-2, generator=generator)
        return head.state_dict(), torch.rand(3)  # the caller's next draw

    first, after_first = trained(0)
    second, after_second = trained(123)
    assert all(torch.equal(first[name], second[name]) for name in first)
    torch.manual_seed(123)
    assert torch.equal(after_second, torch.rand(3)) and not torch.equal(after_first, after_second)
