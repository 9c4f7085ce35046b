"""The clustering model's class counts from the data, where the config leaves them ``null``.

A user's folder (``data=folder``) has as many classes as class folders, and its defect-free class is the
folder named by ``data.defect_free_class``: a config cannot know either. ``model.num_clusters``,
``model.num_classes`` and ``model.defect_free_class`` set to ``null`` are filled from the listed samples
before the model and the callbacks (``callbacks.pseudo_labels.num_clusters: ${model.num_clusters}``) are built.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from datamodules.base import DefectDataModule
from datamodules.errors import DatasetError
from datamodules.samples import Sample

#: the model keys filled from the data when null
CLASS_KEYS = ("num_clusters", "num_classes", "defect_free_class")


def class_counts(samples: Sequence[Sample]) -> tuple[int, int | None]:
    """(number of classes, the defect-free class or ``None``) of samples with class targets: the classes are
    ``0 .. max(target)``; the defect-free one is the single class whose images are all labelled defect-free."""
    targets = {s.target for s in samples}
    if not targets or min(targets) < 0:
        raise DatasetError("the images have no classes (not sorted into class folders): set model.num_clusters=K, "
                           "the number of clusters to find")
    clean = {s.target for s in samples if s.label == 0}
    defective = {s.target for s in samples if s.label != 0}
    defect_free = next(iter(clean)) if len(clean) == 1 and not clean & defective else None
    return max(targets) + 1, defect_free


def fill_class_counts(cfg: DictConfig, datamodule: DefectDataModule | None = None) -> DictConfig:
    """``cfg`` with the null :data:`CLASS_KEYS` of ``cfg.model`` filled from the samples of ``datamodule`` (by
    default ``cfg.data``, built only when a key is null): a copy; ``cfg`` itself is left as it is, and returned
    unchanged where nothing is null. The data is made ready first (``prepare_data``: an archive is extracted
    once)."""
    model = cfg.get("model")
    missing = [k for k in CLASS_KEYS if model is not None and k in model and model[k] is None]
    if not missing:
        return cfg
    if datamodule is None:
        datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    samples = datamodule.list_samples()
    if samples and all(s.target < 0 for s in samples) and model.get("num_clusters") is not None:
        # images without classes (unsorted): K is the user's; there are no classes to score against
        values = {"num_classes": int(model.num_clusters), "defect_free_class": None}
    else:
        num_classes, defect_free = class_counts(samples)
        values = {"num_clusters": num_classes, "num_classes": num_classes, "defect_free_class": defect_free}
    filled = copy.deepcopy(cfg)
    with open_dict(filled):
        for key in missing:
            filled.model[key] = values[key]
    return filled
