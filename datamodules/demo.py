"""A generated dataset in the KolektorSDD layout, written on first use: the demo needs no download."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from datamodules.kolektor import KolektorSDDDataModule
from datamodules.synthetic import write_kolektor_like


class DemoKolektorDataModule(KolektorSDDDataModule):
    """KolektorSDD-layout data generated into ``root`` (atomically) when ``root`` is absent."""

    def __init__(self, *args: Any, num_generated_folders: int = 18, generated_size: tuple[int, int] = (320, 128),
                 **kwargs: Any) -> None:
        kwargs.setdefault("official_split", False)
        super().__init__(*args, **kwargs)
        self.num_generated_folders = num_generated_folders
        self.generated_size = tuple(generated_size)

    def prepare_data(self) -> None:
        if self.root.exists():
            return
        self.root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root.parent, prefix=f".{self.root.name}.partial."))
        try:
            write_kolektor_like(tmp, num_folders=self.num_generated_folders, size=self.generated_size, seed=self.seed)
            tmp.replace(self.root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()
        super().setup(stage)
