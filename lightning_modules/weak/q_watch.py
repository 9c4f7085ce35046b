"""Q (the mean heat map of an image, Eq. 3-4) over a weak-loss stage's last tenth: what says whether LNet went dark.

The weak loss has a dark state (benchmarks/notes/weak_stage1_collapse.md): a heat map dark on every image
pays little on the defective ones and nothing on the defect-free ones. :class:`QWatch` keeps the batches' mean Q of
the defective and of the defect-free images over the last tenth of each weak stage and summarises them at its end.
"""

from __future__ import annotations

from collections import deque

import torch

#: a mean Q below this on the defective images at the end of a weak-loss stage: LNet went dark
DARK_LNET_Q = 0.05


class QWatch:
    """Per-step Q of the defective and defect-free images of a stage; :meth:`summary` at the stage's end."""

    def __init__(self) -> None:
        self.defective: deque[torch.Tensor] = deque()
        self.clean: deque[torch.Tensor] = deque()

    def update(self, q: torch.Tensor, labels: torch.Tensor, local: int, iterations: int) -> dict[str, torch.Tensor]:
        """Record the batch's Q (detached, no sync) at stage step ``local``; return the values to log."""
        window = max(1, iterations // 10)
        if local == 0 or self.defective.maxlen != window:
            self.defective, self.clean = deque(maxlen=window), deque(maxlen=window)
        defective = labels > 0.5
        logs: dict[str, torch.Tensor] = {}
        if defective.any():
            logs["q_defective"] = q[defective].mean()
            self.defective.append(logs["q_defective"])
        if (~defective).any():
            logs["q_clean"] = q[~defective].mean()
            self.clean.append(logs["q_clean"])
        return logs

    def summary(self) -> dict[str, float]:
        """Mean Q of the defective and the defect-free images over the window (NaN where none was seen)."""
        def mean(values: deque[torch.Tensor]) -> float:
            return float(torch.stack(list(values)).float().mean()) if values else float("nan")

        return {"q_defective": mean(self.defective), "q_clean": mean(self.clean), "steps": len(self.defective)}

    @staticmethod
    def is_dark(summary: dict[str, float]) -> bool:
        return summary["q_defective"] < DARK_LNET_Q
