"""Predictions of a trained model on image files: a CSV row per image, heat-map overlays where the method gives
heat maps.

What a method outputs is its own (:meth:`lightning_modules.method.DefectMethod.predict_images`): the weak
model (Xu et al.) gives each image's defect probability and its LNet heat map; the clustering model (Bai et
al.) gives the cluster and its softmax probability.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from datamodules.errors import DatasetError
from datamodules.image_files import load_image, to_tensor
from lightning_modules.method import DefectMethod
from workflow.pictures import save_heatmap_panel


@dataclass
class LoadedImage:
    """One image: its output name, its file in the model's color mode, and the model's input tensor."""

    name: str
    original: Image.Image
    tensor: torch.Tensor


def iter_images(files: Sequence[Path], root: Path, mode: str, size: Sequence[int] | None,
                min_side: int = 1) -> Iterator[LoadedImage]:
    """Load ``files`` one by one (named by their path relative to ``root``), resized to ``size`` (H, W) or at
    native size (``None``)."""
    for path in files:
        original, tensor = load_image(path, mode, size)
        if min(tensor.shape[-2:]) < min_side:
            raise DatasetError(f"{path} is {tensor.shape[-1]}x{tensor.shape[-2]}: this model needs at least "
                             f"{min_side} pixels a side (resize it, or predict with resize=trained)")
        yield LoadedImage(path.relative_to(root).as_posix(), original, tensor)


def batches_of_one_size(images: Iterator[LoadedImage], batch_size: int) -> Iterator[list[LoadedImage]]:
    """Consecutive images grouped into batches of at most ``batch_size`` images of the same size."""
    batch: list[LoadedImage] = []
    for image in images:
        if batch and (len(batch) >= batch_size or batch[0].tensor.shape != image.tensor.shape):
            yield batch
            batch = []
        batch.append(image)
    if batch:
        yield batch


def overlay_path(out_dir: Path, name: str) -> Path:
    """``<out_dir>/overlays/<name>.png`` (the name keeps its own suffix: ``a.jpg`` and ``a.png`` differ)."""
    return out_dir / "overlays" / f"{name}.png"


@torch.no_grad()
def predict_files(
    module: DefectMethod,
    files: Sequence[Path],
    root: Path,
    mode: str,
    size: Sequence[int] | None,
    out_dir: Path | None = None,
    batch_size: int = 8,
    threshold: float | None = None,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """One row per file: ``name`` and the method's prediction columns (``label`` = probability >= threshold
    where the method is thresholded and a threshold is given); heat maps become overlays under ``out_dir``
    (none when ``out_dir`` is ``None``): the image at its own size, the heat map upsampled onto it."""
    module = module.to(device).eval()
    rows: list[dict[str, Any]] = []
    for batch in batches_of_one_size(iter_images(files, root, mode, size, module.min_side), batch_size):
        outputs = module.predict_images(torch.stack([b.tensor for b in batch]).to(device))
        for i, image in enumerate(batch):
            row: dict[str, Any] = {"name": image.name}
            row.update({k: outputs[k][i].item() for k in module.prediction_columns})
            if module.thresholded and threshold is not None:
                row["label"] = int(row["probability"] >= threshold)
            if out_dir is not None and "heatmap" in outputs:
                shown = image.tensor if size is None else to_tensor(image.original)  # the image at its own size
                save_heatmap_panel(overlay_path(out_dir, image.name), shown, None,
                                   outputs["heatmap"][i])
            rows.append(row)
    return rows


def write_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write rows as a CSV (columns in the first row's order; floats with 6 significant digits)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0]) if rows else ["name"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    return path
