"""Q (the mean heat map of an image, Eq. 3-4) over a weak-loss stage's last tenth: whether LNet went dark, and whether
it tells the defective training images from the defect-free ones.

The weak loss has a dark state (benchmarks/notes/weak_stage1_collapse.md): a heat map dark on every image
pays little on the defective ones and nothing on the defect-free ones. :class:`QWatch` keeps the batches' mean Q of
the defective and of the defect-free images over the last tenth of each weak stage and summarises them at its end.
A stage can also end lit and still not rank the images: over its last tenth, the batches where the defective
images' mean Q exceeds the defect-free ones' are then no more frequent than a coin's heads (a one-sided binomial
test against 1/2; the threshold is chance, not fitted to any dataset). The module asks it of stage 1 only: in stage 3
(alpha at alpha_init from its first step, lr 0.001, the decision net trained beside) a real ELPV fold ranked only 18
of its last 30 batches, where its stage 1 had ranked 55 of 75 and its test AP was 0.59 against chance 0.31.
"""

from __future__ import annotations

from collections import deque

import torch
from scipy.stats import binomtest

#: a mean Q below this on the defective images at the end of a weak-loss stage: LNet went dark
DARK_LNET_Q = 0.05
#: the binomial test's level: a stage whose ranked share of batches is not above 1/2 at this level does not rank
UNRANKED_P = 0.05
#: below this many batches with both kinds of image in the window, the test is not made (4 heads in 4 is p 0.06)
MIN_RANKED_BATCHES = 20


class QWatch:
    """Per-step Q of the defective and defect-free images of a stage; :meth:`summary` at the stage's end."""

    def __init__(self) -> None:
        self.defective: deque[torch.Tensor] = deque()
        self.clean: deque[torch.Tensor] = deque()
        self.ranked: deque[torch.Tensor] = deque()

    def update(self, q: torch.Tensor, labels: torch.Tensor, local: int, iterations: int) -> dict[str, torch.Tensor]:
        """Record the batch's Q (detached, no sync) at stage step ``local``; return the values to log."""
        window = max(1, iterations // 10)
        if local == 0 or self.defective.maxlen != window:
            self.defective, self.clean, self.ranked = (deque(maxlen=window) for _ in range(3))
        defective = labels > 0.5
        logs: dict[str, torch.Tensor] = {}
        if defective.any():
            logs["q_defective"] = q[defective].mean()
            self.defective.append(logs["q_defective"])
        if (~defective).any():
            logs["q_clean"] = q[~defective].mean()
            self.clean.append(logs["q_clean"])
        if len(logs) == 2:
            self.ranked.append(logs["q_defective"] > logs["q_clean"])
        return logs

    def summary(self) -> dict[str, float]:
        """Mean Q of the defective and the defect-free images over the window (NaN where none was seen); ``ranked``:
        the batches (of ``pairs`` with both kinds) where the defective images' mean Q was the higher."""
        def mean(values: deque[torch.Tensor]) -> float:
            return float(torch.stack(list(values)).float().mean()) if values else float("nan")

        ranked = int(torch.stack(list(self.ranked)).sum()) if self.ranked else 0
        return {"q_defective": mean(self.defective), "q_clean": mean(self.clean), "steps": len(self.defective),
                "ranked": ranked, "pairs": len(self.ranked)}

    @staticmethod
    def is_dark(summary: dict[str, float]) -> bool:
        return summary["q_defective"] < DARK_LNET_Q

    @staticmethod
    def is_unranked(summary: dict[str, float]) -> bool:
        """Whether the defective images' Q was not above the defect-free ones' more often than chance (one-sided
        binomial test at :data:`UNRANKED_P`); False where too few batches had both kinds to tell."""
        pairs = int(summary["pairs"])
        if pairs < MIN_RANKED_BATCHES:
            return False
        return binomtest(int(summary["ranked"]), pairs, 0.5, alternative="greater").pvalue > UNRANKED_P
