"""The Coin Flipping Network (Lobel et al., ICML 2023), as COPO uses it for pseudo-counts (docs/copo.md).

Each visit of a state s is paired once with a vector c ∈ {−1, +1}^d of fair coin flips, stored with it. A regressor
trained with MSE on (s, c) converges to the mean of the flips of s's visits, so E[f_j(s)²] = 1/n(s):

    pseudo-count n̂(s) = 1 / mean_j f_j(s)²      bonus b(s) = (mean_j f_j(s)²) ** exponent  (0.5 gives 1/√n)

What the released COPO code gets wrong and this module does right: flips are drawn once per visit and replayed as
stored (redrawing them every step turns the target into noise); the buffer can persist across iterations; the head
is in `eval()` whenever it scores; the exponent is explicit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from alignloop.errors import NonFiniteError
from alignloop.models.loop import BatchOrder, StepResult, train_steps


class CFNHead(nn.Module):
    """dropout → Linear(hidden, width) → LeakyReLU → Linear(width, d), plus an optional fixed random prior that is
    added to the output (optimism: a novel state's bonus starts near the prior's scale instead of near 0)."""

    def __init__(self, hidden_size: int, d: int = 20, width: int = 32, dropout: float = 0.1,
                 prior_scale: float = 0.0, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, width), nn.LeakyReLU(0.01),
                                 nn.Linear(width, d))
        with torch.no_grad():  # seeded init, independent of the global RNG
            for layer in (self.net[1], self.net[3]):
                bound = 1 / layer.in_features ** 0.5
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
        self.prior_scale = prior_scale
        prior = torch.empty(hidden_size, d)
        nn.init.orthogonal_(prior, generator=generator)
        self.register_buffer("prior", prior)
        # Per-dimension standardisation of the inputs, fitted to the replay buffer: hidden states at EOS differ
        # little between sequences, and a raw-scale head would barely tell them apart.
        self.register_buffer("input_mean", torch.zeros(hidden_size))
        self.register_buffer("input_std", torch.ones(hidden_size))

    def fit_normalisation(self, features: Tensor) -> None:
        self.input_mean.copy_(features.mean(0))
        self.input_std.copy_(features.std(0, unbiased=False).clamp_min(1e-6) if len(features) > 1
                             else torch.ones_like(self.input_std))

    def forward(self, features: Tensor) -> Tensor:
        features = (features - self.input_mean) / self.input_std
        out = self.net(features)
        if self.prior_scale:
            normalised = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            # each coordinate of a unit vector projected on orthonormal columns has variance 1/hidden: rescale to 1
            out = out + self.prior_scale * (normalised @ self.prior) * self.prior.shape[0] ** 0.5
        return out


def coin_flips(count: int, d: int, generator: torch.Generator) -> Tensor:
    """(count, d) fair ±1 flips, one vector per visit, drawn once."""
    return torch.randint(0, 2, (count, d), generator=generator).float() * 2 - 1


@dataclass
class ReplayBuffer:
    """Every visit so far: its feature vector and the coin flips drawn for it."""

    features: Tensor  # (visits, hidden)
    flips: Tensor  # (visits, d)

    @classmethod
    def empty(cls, hidden_size: int, d: int) -> ReplayBuffer:
        return cls(torch.empty(0, hidden_size), torch.empty(0, d))

    def add(self, features: Tensor, generator: torch.Generator) -> ReplayBuffer:
        flips = coin_flips(len(features), self.flips.shape[1], generator)
        return ReplayBuffer(torch.cat([self.features, features.float()]), torch.cat([self.flips, flips]))

    def __len__(self) -> int:
        return len(self.features)


def train_cfn(head: CFNHead, buffer: ReplayBuffer, *, steps: int, batch_size: int, learning_rate: float,
              generator: torch.Generator, redraw_flips: bool = False) -> list[float]:
    """`steps` AdamW steps of MSE to the stored flips over shuffled minibatches; returns the loss per step.

    `redraw_flips` reproduces the released COPO code (fresh flips every step) for tests only: it makes the target
    pure noise, so the network learns f ≈ 0 everywhere and the pseudo-counts stop meaning anything."""
    head.fit_normalisation(buffer.features)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny steps: threads only add synchronisation (10× slower on a busy CPU)
    dropout_seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    try:
        # dropout draws from the global RNG: seed it from `generator`, so the head does not depend on what ran
        # earlier in the process (a resumed run trains the same head), and leave the caller's RNG as it was
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(dropout_seed)
            return _train(head, buffer, steps, batch_size, learning_rate, generator, redraw_flips)
    finally:
        torch.set_num_threads(threads)


def _train(head: CFNHead, buffer: ReplayBuffer, steps: int, batch_size: int, learning_rate: float,
           generator: torch.Generator, redraw_flips: bool) -> list[float]:
    optimizer = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=0.0)
    batches = BatchOrder(len(buffer), batch_size, generator)

    def step(index: int) -> StepResult:
        indices = batches.take()
        targets = (coin_flips(len(indices), buffer.flips.shape[1], generator) if redraw_flips
                   else buffer.flips[indices])
        loss = (head(buffer.features[indices]) - targets).pow(2).mean()
        loss.backward()
        return loss.item(), {}

    def non_finite(index: int, loss: float) -> Exception:
        return NonFiniteError(f"CFN training, step {index}: loss is {loss}; lower cfn.learning_rate")

    head.train()
    losses = [row["loss"] for row in train_steps(steps, step, optimizer, non_finite=non_finite)]
    head.eval()
    return losses


@torch.no_grad()
def mean_square(head: CFNHead, features: Tensor, batch_size: int = 4096) -> Tensor:
    """mean_j f_j(s)² per row, with the head in eval() (dropout off)."""
    head.eval()
    return torch.cat([head(features[k:k + batch_size].float()).pow(2).mean(-1)
                      for k in range(0, len(features), batch_size)]) if len(features) else torch.empty(0)


def pseudo_counts(head: CFNHead, features: Tensor) -> Tensor:
    return 1.0 / mean_square(head, features).clamp_min(1e-12)


def bonuses(head: CFNHead, features: Tensor, exponent: float = 0.5) -> Tensor:
    return mean_square(head, features).pow(exponent)
