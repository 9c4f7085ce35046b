"""The three training stages of Xu et al. (2020) IV.A as data: what trains, with which loss, at which lr."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

PARTS = ("trunk", "lnet", "dnet")
LOSSES = ("weak", "bce")


@dataclass(frozen=True)
class Stage:
    """One stage: ``iterations`` optimizer steps training ``train`` parts with ``losses``.

    ``lr`` is the learning rate from the stage's first iteration; ``lr_drops`` maps a stage-local
    iteration to the learning rate from then on (the paper's stage 2 drops 0.01 to 0.001 at 600).
    ``alpha`` is ``"collaborative"`` (Eq. 6, stage 1) or ``"fixed"`` (alpha_init, stage 3).
    """

    name: str
    iterations: int
    lr: float
    train: tuple[str, ...]
    losses: tuple[str, ...]
    lr_drops: Mapping[int, float] = field(default_factory=dict)
    alpha: str = "fixed"

    def __post_init__(self) -> None:
        unknown = set(self.train) - set(PARTS)
        if unknown:
            raise ValueError(f"stage {self.name}: unknown parts {sorted(unknown)}; choose from {PARTS}")
        unknown = set(self.losses) - set(LOSSES)
        if unknown:
            raise ValueError(f"stage {self.name}: unknown losses {sorted(unknown)}; choose from {LOSSES}")
        if self.alpha not in ("collaborative", "fixed"):
            raise ValueError(f"stage {self.name}: alpha must be 'collaborative' or 'fixed'")

    def lr_at(self, local_step: int) -> float:
        lr = self.lr
        for start, value in sorted((int(k), float(v)) for k, v in self.lr_drops.items()):
            if local_step >= start:
                lr = value
        return lr


class StagePlan:
    """The stages in order; maps a global optimizer step to (stage index, stage, step inside the stage)."""

    def __init__(self, stages: Sequence[Stage | Mapping]) -> None:
        self.stages = [s if isinstance(s, Stage) else _stage_from_mapping(s) for s in stages]
        self.active = [s for s in self.stages if s.iterations > 0]
        if not self.active:
            raise ValueError("the stage plan has no stage with iterations > 0")
        self.ends = []
        total = 0
        for s in self.active:
            total += s.iterations
            self.ends.append(total)

    @property
    def total(self) -> int:
        return self.ends[-1]

    def locate(self, step: int) -> tuple[int, Stage, int]:
        """The active stage at global ``step`` (steps past the end stay in the last stage)."""
        start = 0
        for i, (stage, end) in enumerate(zip(self.active, self.ends, strict=True)):
            if step < end or i == len(self.active) - 1:
                return i, stage, step - start
            start = end
        raise AssertionError("unreachable")

    def lr_at(self, step: int) -> float:
        _, stage, local = self.locate(step)
        return stage.lr_at(local)

    def with_retry(self, index: int, lr_factor: float) -> StagePlan:
        """This plan with active stage ``index`` run once more right after itself, named ``<name>_retry``, its
        learning rates (``lr`` and ``lr_drops``) times ``lr_factor``; the stages after it move back."""
        stage = self.active[index]
        retry = replace(stage, name=f"{stage.name}_retry", lr=stage.lr * lr_factor,
                        lr_drops={k: v * lr_factor for k, v in stage.lr_drops.items()})
        return StagePlan([*self.active[: index + 1], retry, *self.active[index + 1 :]])


def _stage_from_mapping(m: Mapping) -> Stage:
    return Stage(
        name=str(m["name"]),
        iterations=int(m["iterations"]),
        lr=float(m["lr"]),
        train=tuple(m["train"]),
        losses=tuple(m["losses"]),
        lr_drops={int(k): float(v) for k, v in dict(m.get("lr_drops") or {}).items()},
        alpha=str(m.get("alpha", "fixed")),
    )
