"""Lightning callbacks of the project."""

from callbacks.cluster_plots import ClusteringPlots
from callbacks.config_in_checkpoint import ConfigInCheckpoint
from callbacks.heatmap_panels import HeatmapPanels
from callbacks.pr_curve import PRCurve
from callbacks.pseudo_labels import PseudoLabelReassigner
from callbacks.stage_checkpoint import StageCheckpoint
from callbacks.true_labels import TrueLabels

__all__ = ["ClusteringPlots", "ConfigInCheckpoint", "PseudoLabelReassigner", "HeatmapPanels", "PRCurve",
           "StageCheckpoint", "TrueLabels"]
