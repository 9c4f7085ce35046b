"""Not in the paper: a stage 1 that ends dark is run again, from the weights it started from, at a lower rate.

The weak loss has a dark state (``benchmarks/notes/weak_stage1_collapse.md``): at the paper's SGD lr 0.1 the first
clipped steps can darken every heat map before LNet learns which images to light, and the sigmoid's vanishing
slope keeps it there. Seen on a dataset the project was not tuned on (test AP at chance) and reproduced on a
synthetic folder of faint defects, where the same stage 1 at a tenth of the rate stayed lit. So when stage 1's
last tenth ends with a mean Q on the defective training images below
:data:`~lightning_modules.weak.q_watch.DARK_LNET_Q` (the run's own warning), :class:`DarkRestart` restores the
network (weights and batch-norm statistics) as it was at the stage's first step, clears the optimizer's state, and
inserts a copy of the stage right after it at ``lr_factor`` times its rates (:meth:`StagePlan.with_retry`); the
trainer's step budget grows by the stage's length. A stage 1 that ends lit is left alone (no KolektorSDD or ELPV
fold has ended dark here, so their results are unchanged by it). It reads only the training images' image-level
labels, the method's own supervision. With the module's ``rerun_unranked`` the same rerun also follows a stage 1 that
ends lit but ranks its training images at chance (:meth:`~lightning_modules.weak.q_watch.QWatch.is_unranked`): on
the synthetic folder two folds did, scored at chance, and rose above it when rerun
(benchmarks/notes/weak_stage1_collapse.md).
"""

from __future__ import annotations

import copy

import lightning as L
import torch

from lightning_modules.weak.stages import StagePlan


class DarkRestart:
    """Up to ``restarts`` reruns of the first weak stage when it ends dark, each at ``lr_factor`` times the rates
    of the attempt before."""

    def __init__(self, restarts: int = 1, lr_factor: float = 0.1) -> None:
        if restarts < 0 or not 0.0 < lr_factor <= 1.0:
            raise ValueError(f"dark_restarts must be >= 0 and dark_restart_lr_factor in (0, 1], got {restarts}, "
                             f"{lr_factor}")
        self.restarts = int(restarts)
        self.lr_factor = float(lr_factor)
        self.done = 0
        self.start_state: dict[str, torch.Tensor] | None = None

    def remember(self, net: torch.nn.Module) -> None:
        """Keep the network's state at the first step of stage 1's first attempt (once)."""
        if self.start_state is None and self.done < self.restarts:
            self.start_state = {k: v.detach().clone() for k, v in net.state_dict().items()}

    def wanted(self, failed: bool) -> bool:
        """Whether the attempt that just ended (``failed``: dark, or unranked where asked) is to be run again; where
        not, the starting state is dropped (so that later checkpoints do not carry it)."""
        if failed and self.done < self.restarts and self.start_state is not None:
            return True
        self.start_state = None
        return False

    def restart(self, module: L.LightningModule, plan: StagePlan, index: int) -> StagePlan:
        """Restore the network, clear the optimizers' state, lengthen the trainer's budget; the new plan."""
        module.net.load_state_dict(self.start_state)
        new_plan = plan.with_retry(index, self.lr_factor)
        module.trainer.fit_loop.epoch_loop.max_steps = new_plan.total
        lr = module.lr_scale * new_plan.lr_at(module.trainer.global_step)  # the scheduler's, where it steps after
        for optimizer in module.trainer.optimizers:
            optimizer.state.clear()
            for group in optimizer.param_groups:
                group["lr"] = lr
        self.done += 1
        if self.done >= self.restarts:
            self.start_state = None  # no further attempt will need it
        return new_plan

    def replay(self, plan: StagePlan, index: int) -> StagePlan:
        """The plan with the restarts already made (``self.done``, e.g. restored from a checkpoint) inserted."""
        for i in range(self.done):
            plan = plan.with_retry(index + i, self.lr_factor)
        return plan

    def state(self, pending: bool) -> dict:
        """For a checkpoint: the reruns made, the starting state while a rerun may still come, and whether one is
        due at the next step (``pending``: a checkpoint saved at the end of a dark stage 1, before the rerun)."""
        return {"done": self.done, "start_state": copy.copy(self.start_state), "pending": pending}

    def load_state(self, state: dict | None) -> bool:
        """Restore :meth:`state`'s; returns its ``pending``."""
        state = state or {}
        self.done = int(state.get("done", 0))
        self.start_state = state.get("start_state")
        return bool(state.get("pending", False))
