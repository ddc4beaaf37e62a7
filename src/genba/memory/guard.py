"""A guard against collapse of test-time memories (genba's addition; off by default).

Test-time memories (DMN's dynamic memory, TDA's positive cache) are filled with pseudo-labelled
test features. When the starting classifier is weak and biased, most pseudo-labels name one
class, that class's memory fills with everything, and the memory then pulls every prediction to
it. Three independent remedies, each off at its default value:

  * confidence gate (`max_entropy` < 1): write only if H(p) / log C <= max_entropy;
  * class-balanced admission (`balance` > 0): a class may grow its queue only while
    count_c < balance * mean(count) + 1, else it can only replace its worst entry
    (`DynamicMemory.write_batch(balance=...)`);
  * prior correction (`prior_momentum` > 0): the pseudo-label is argmax_c p_c / pi_c, where pi is
    an exponential moving average of the predicted distributions seen so far (pi_0 uniform), so a
    class that is predicted for everything stops winning the pseudo-label.
None of them changes the prediction itself, only what is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from genba.errors import GenbaError
from genba.memory.read import entropy


@dataclass
class CollapseGuard:
    """Write policy of a test-time memory; the defaults reproduce the papers (no guard)."""

    max_entropy: float = 1.0
    """Confidence gate on normalised entropy H(p)/log C; 1.0 admits every write."""
    balance: float = 0.0
    """Class-balanced admission factor; 0 turns it off (e.g. 2.0)."""
    prior_momentum: float = 0.0
    """EMA momentum of the class prior used to correct pseudo-labels; 0 turns it off (e.g. 0.02)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.max_entropy <= 1.0:
            raise GenbaError(f"guard max_entropy must be in (0, 1], got {self.max_entropy}")
        if not 0.0 <= self.balance <= 1e6 or not 0.0 <= self.prior_momentum < 1.0:
            raise GenbaError("guard balance must be in [0, 1e6] and prior_momentum in [0, 1)")
        self._prior: torch.Tensor | None = None

    @property
    def active(self) -> bool:
        return self.max_entropy < 1.0 or self.balance > 0 or self.prior_momentum > 0

    def reset(self) -> None:
        """Forget the running class prior."""
        self._prior = None

    def pseudo_labels(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pseudo-labels, their entropies and the write gate for a batch of predictions.

        Args:
            probs: (B, C) predicted distributions (already averaged over kept views).

        Returns:
            labels (B,) long, entropies (B,) in nats of the distribution the label came from,
            admit (B,) bool.
        """
        C = probs.shape[1]
        if self.prior_momentum > 0:
            if self._prior is None:
                self._prior = torch.full((C,), 1.0 / C)
            rows = []
            for p in probs:  # sequential, so a batch equals the same queries one at a time
                self._prior = (1 - self.prior_momentum) * self._prior + self.prior_momentum * p
                q = p / self._prior
                rows.append(q / q.sum())
            probs = torch.stack(rows)  # (B, C)
        h = entropy(probs)  # (B,)
        admit = h / math.log(C) <= self.max_entropy if C > 1 else torch.ones_like(h, dtype=torch.bool)
        return probs.argmax(1), h, admit


@dataclass
class GuardOptions:
    """The guard's settings as config fields; method configs that keep a test-time memory inherit them."""

    guard_max_entropy: float = 1.0
    """Collapse guard: confidence gate on test-time memory writes (1.0 = off)."""
    guard_balance: float = 0.0
    """Collapse guard: class-balanced admission (0 = off)."""
    guard_prior: float = 0.0
    """Collapse guard: momentum of the prior correction of pseudo-labels (0 = off)."""

    def make_guard(self) -> CollapseGuard:
        """A fresh guard with these settings (raises GenbaError on invalid values)."""
        return CollapseGuard(self.guard_max_entropy, self.guard_balance, self.guard_prior)
