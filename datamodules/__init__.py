"""DataModules: one thin class per dataset over :class:`datamodules.base.DefectDataModule`."""

from datamodules.base import DefectDataModule
from datamodules.dagm import DAGMDataModule, list_dagm_samples
from datamodules.elpv import ElpvDataModule, list_elpv_samples
from datamodules.errors import DatasetError
from datamodules.folder import FolderDataModule, list_folder_samples
from datamodules.kolektor import KolektorSDDDataModule, list_kolektor_samples
from datamodules.neu import NEUDataModule, list_neu_samples, read_voc_boxes
from datamodules.samples import Sample
from datamodules.severstal import SeverstalDataModule, list_severstal_samples

__all__ = [
    "DAGMDataModule",
    "DatasetError",
    "DefectDataModule",
    "ElpvDataModule",
    "FolderDataModule",
    "KolektorSDDDataModule",
    "NEUDataModule",
    "Sample",
    "SeverstalDataModule",
    "list_dagm_samples",
    "list_elpv_samples",
    "list_folder_samples",
    "list_kolektor_samples",
    "list_neu_samples",
    "list_severstal_samples",
    "read_voc_boxes",
]
