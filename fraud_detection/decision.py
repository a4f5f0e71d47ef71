"""Decisions: calibrated fraud probability → allow / review / block.

Two ways to set the thresholds:
- `DecisionPolicy.from_costs(missed_fraud, review, false_block)`: the Bayes decision for a
  calibrated p. Allowing costs p·missed_fraud, reviewing costs `review` (a reviewer catches the
  fraud), blocking costs (1-p)·false_block (an honest customer declined). Review when
  p ≥ review/missed_fraud; block when blocking is the cheapest of the three.
- `DecisionPolicy.from_review_budget(probs, n_days, per_day)`: the review threshold that sends
  about `per_day` transactions a day to review on a reference period (e.g. the calibration
  weeks); the block threshold still comes from the costs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["DecisionPolicy", "DECISIONS"]
DECISIONS = ("allow", "review", "block")


@dataclass(frozen=True)
class DecisionPolicy:
    review_threshold: float
    block_threshold: float
    source: str = "costs"

    @classmethod
    def from_costs(
        cls, missed_fraud: float = 150.0, review: float = 5.0, false_block: float = 50.0
    ) -> DecisionPolicy:
        if min(missed_fraud, review, false_block) <= 0:
            raise ValueError("costs must be positive")
        t_review = review / missed_fraud
        # block beats review when (1-p)·fb <= review, and beats allow when (1-p)·fb <= p·mf
        t_block = max(1.0 - review / false_block, false_block / (false_block + missed_fraud))
        return cls(min(t_review, t_block), t_block, "costs")

    @classmethod
    def from_review_budget(
        cls, probs: np.ndarray, n_days: int, per_day: float, block_threshold: float = 0.9
    ) -> DecisionPolicy:
        """Review threshold = the score of the (per_day · n_days)-th riskiest reference row."""
        probs = np.sort(np.asarray(probs, np.float64))[::-1]
        k = int(round(per_day * n_days))
        t = float(probs[k]) if 0 <= k < len(probs) else 0.0
        t = float(np.nextafter(t, 1.0))  # strictly above the (k+1)-th: at most k reviews
        return cls(min(t, block_threshold), block_threshold, f"budget:{per_day}/day")

    def decide(self, probs: np.ndarray) -> list[str]:
        p = np.asarray(probs, np.float64)
        out = np.where(p >= self.block_threshold, 2, np.where(p >= self.review_threshold, 1, 0))
        return [DECISIONS[i] for i in out]

    def to_dict(self) -> dict:
        return asdict(self)
