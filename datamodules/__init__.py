"""DataModules: one thin class per dataset over :class:`datamodules.base.DefectDataModule`."""

from datamodules.base import DefectDataModule
from datamodules.errors import DatasetError
from datamodules.kolektor import KolektorSDDDataModule, list_kolektor_samples
from datamodules.samples import Sample

__all__ = ["DatasetError", "DefectDataModule", "KolektorSDDDataModule", "Sample", "list_kolektor_samples"]
