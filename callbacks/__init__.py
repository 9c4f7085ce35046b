"""Lightning callbacks of the project."""

from callbacks.faiss_kmeans import FaissKMeans
from callbacks.stage_checkpoint import StageCheckpoint

__all__ = ["FaissKMeans", "StageCheckpoint"]
