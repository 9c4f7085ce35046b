"""The dataset every DataModule serves: samples decoded when an item is read (in the loader's workers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from datamodules.decoded_cache import DecodedCache
from datamodules.samples import Sample, decode_sample


class SampleDataset(Dataset):
    """A sample table served as dicts of tensors; each image is decoded (and resized) when its item is read.

    What needs every sample at once (a sampler's labels, the true classes, which masks are known) comes from the
    table (:attr:`labels`, :attr:`targets`, :attr:`mask_known`), never from decoded images, so nothing is decoded
    before a loader asks for an item. ``cache`` (shared by a DataModule's datasets) keeps decoded samples in RAM up
    to its size; ``None`` decodes at every read.

    An item: ``image`` (float (C, H, W) in [0, 1], the 8-bit pixels / 255), ``mask`` (bool (1, H, W)),
    ``mask_known``, ``label``, ``target``, ``index`` and ``name``.
    """

    def __init__(self, samples: Sequence[Sample], size: Sequence[int], cache: DecodedCache | None = None) -> None:
        self.samples = list(samples)
        self.size = (int(size[0]), int(size[1]))
        self.cache = cache
        self.labels = torch.tensor([s.label for s in self.samples], dtype=torch.float32)
        self.mask_known = torch.tensor([s.mask_known for s in self.samples], dtype=torch.bool)
        self.targets = torch.tensor([s.target for s in self.samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def decoded(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The uint8 image and bool mask of sample ``index``, each (1, H, W): from the cache, or decoded now."""
        sample = self.samples[index]
        if self.cache is None:
            return decode_sample(sample, self.size)
        key = (str(sample.image), str(sample.mask), sample.mask_rle, self.size)
        return self.cache.get(key, lambda: decode_sample(sample, self.size))  # type: ignore[return-value]

    def pixels(self, index: int) -> torch.Tensor:
        """The uint8 image of sample ``index`` (C, H, W)."""
        return self.decoded(index)[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.decoded(index)
        return {
            "image": image.float().div_(255.0),
            "mask": mask,
            "mask_known": self.mask_known[index],
            "label": self.labels[index],
            "target": self.targets[index],
            "index": index,
            "name": self.samples[index].name,
        }

    def preload(self) -> None:
        """Decode every sample into the cache now, as far as it holds them (in this process)."""
        if self.cache is not None:
            for index in range(len(self)):
                self.decoded(index)

    def stacked_images(self) -> torch.Tensor:
        """Every image decoded, as one uint8 tensor (N, C, H, W) (for tools that need them all at once)."""
        if not self.samples:
            return torch.empty(0, 1, *self.size, dtype=torch.uint8)
        return torch.stack([self.pixels(i) for i in range(len(self))])
