"""Unsupervised classification by joint feature learning and k-means clustering (Bai et al. 2024)."""

from lightning_modules.cluster.backbone import backbone_from_config, create_backbone
from lightning_modules.cluster.module import ClusteringModule

__all__ = ["ClusteringModule", "backbone_from_config", "create_backbone"]
