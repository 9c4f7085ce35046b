"""Lightning callbacks of the project."""

from callbacks.stage_checkpoint import StageCheckpoint

__all__ = ["StageCheckpoint"]
