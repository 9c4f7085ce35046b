"""Generate small datasets in the real on-disk layouts, for the demo experiment and for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.rle import rle_encode


def commutator_strip(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured, commutator-like grayscale strip: vertical bars of copper with noise and shading."""
    x = np.arange(width)
    bars = 0.5 + 0.25 * np.sign(np.sin(2 * np.pi * x / rng.uniform(18, 26) + rng.uniform(0, 6)))
    shade = np.linspace(0.85, 1.1, height)[:, None]
    image = bars[None, :] * shade + rng.normal(0, 0.05, (height, width))
    return np.clip(image * 200 + 20, 0, 255)


def draw_crack(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, thickness: int) -> None:
    """Draw one dark, thin, wandering crack across part of the strip, and mark it in the mask."""
    height, width = image.shape
    y = rng.integers(height // 6, 5 * height // 6)
    x = rng.integers(width // 6, 5 * width // 6)
    length = rng.integers(height // 8, height // 4)
    for _ in range(length):
        y0, x0 = max(0, y - thickness), max(0, x - thickness)
        image[y0 : y + thickness, x0 : x + thickness] *= 0.2
        mask[y0 : y + thickness, x0 : x + thickness] = 255
        y = int(np.clip(y + 1, 0, height - 1))
        x = int(np.clip(x + rng.integers(-1, 2), 0, width - 1))


def write_kolektor_like(
    root: str | Path,
    num_folders: int = 12,
    parts_per_folder: int = 8,
    defective_every: int = 1,
    size: tuple[int, int] = (320, 128),
    thickness: int = 3,
    seed: int = 0,
) -> Path:
    """Write a KolektorSDD-layout dataset: ``kosNN/PartM.jpg`` + ``PartM_label.bmp`` (0/255 masks).

    Every ``defective_every``-th folder holds one defective part (Part0..Part7, seeded), like the real
    dataset where most commutators have one defective image. Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    height, width = size
    for f in range(1, num_folders + 1):
        folder = root / f"kos{f:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        bad_part = int(rng.integers(parts_per_folder)) if f % defective_every == 0 else -1
        for p in range(parts_per_folder):
            image = commutator_strip(rng, height, width)
            mask = np.zeros((height, width), dtype=np.uint8)
            if p == bad_part:
                draw_crack(rng, image, mask, thickness)
            Image.fromarray(image.astype(np.uint8), mode="L").save(folder / f"Part{p}.jpg", quality=95)
            Image.fromarray(mask, mode="L").save(folder / f"Part{p}_label.bmp")
    return root


# -- generators for the other datasets' layouts -------------------------------------------------------

#: NEU class names in target order, and the NEU-CLS file-name prefixes of each.
NEU_CLASSES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
NEU_CLS_PREFIXES = ("Cr", "In", "Pa", "PS", "RS", "Sc")


def steel_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A grey, horizontally streaked steel-like texture (float, 0..255)."""
    streaks = rng.normal(0, 12, (height, 1)) + rng.normal(0, 6, (height, width))
    return np.clip(120 + streaks, 0, 255)


Box = tuple[int, int, int, int]


def random_box(rng: np.random.Generator, height: int, width: int) -> tuple[int, int, int, int]:
    """A box ``(xmin, ymin, xmax, ymax)`` inside a ``height x width`` image, at least 2 px each way."""
    x0, y0 = int(rng.integers(0, width - 2)), int(rng.integers(0, height - 2))
    x1 = int(rng.integers(x0 + 2, width + 1))
    y1 = int(rng.integers(y0 + 2, height + 1))
    return x0, y0, x1, y1


def voc_xml(filename: str, size: tuple[int, int], objects: list[tuple[str, Box]]) -> str:
    """A Pascal VOC annotation as written by the NEU-DET release: ``<object><name>`` + ``<bndbox>``."""
    height, width = size
    parts = [
        "<annotation>", "\t<folder>NEU-DET</folder>", f"\t<filename>{filename}</filename>",
        f"\t<size><width>{width}</width><height>{height}</height><depth>1</depth></size>",
        "\t<segmented>0</segmented>",
    ]
    for name, (x0, y0, x1, y1) in objects:
        parts += [
            "\t<object>", f"\t\t<name>{name}</name>", "\t\t<pose>Unspecified</pose>",
            "\t\t<truncated>0</truncated>", "\t\t<difficult>0</difficult>",
            f"\t\t<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>",
            "\t</object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def write_neu_cls(root: str | Path, per_class: int = 3, size: tuple[int, int] = (32, 32),
                  seed: int = 0) -> Path:
    """Write the NEU-CLS layout: ``root/<Prefix>_<n>.bmp`` (``Cr In Pa PS RS Sc``, n from 1); returns root."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k, prefix in enumerate(NEU_CLS_PREFIXES):
        for n in range(1, per_class + 1):
            image = steel_texture(rng, *size) + 10 * k
            pixels = np.clip(image, 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / f"{prefix}_{n}.bmp")
    return root


def write_neu_det(root: str | Path, per_class: int = 3, size: tuple[int, int] = (32, 32),
                  seed: int = 0) -> Path:
    """Write the NEU-DET layout: ``root/IMAGES/<class>_<n>.jpg`` + ``root/ANNOTATIONS/<class>_<n>.xml``.

    Each image has one VOC box (a darkened rectangle). Returns ``root``.
    """
    root = Path(root)
    (root / "IMAGES").mkdir(parents=True, exist_ok=True)
    (root / "ANNOTATIONS").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in NEU_CLASSES:
        for n in range(1, per_class + 1):
            image = steel_texture(rng, *size)
            x0, y0, x1, y1 = random_box(rng, *size)
            image[y0:y1, x0:x1] *= 0.5
            stem = f"{name}_{n}"
            pixels = image.astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / "IMAGES" / f"{stem}.jpg", quality=95)
            xml = voc_xml(f"{stem}.jpg", size, [(name, (x0, y0, x1, y1))])
            (root / "ANNOTATIONS" / f"{stem}.xml").write_text(xml)
    return root


def write_severstal(
    root: str | Path,
    n_clean: int = 4,
    n_per_class: int = 2,
    n_multi: int = 1,
    size: tuple[int, int] = (32, 200),
    seed: int = 0,
) -> dict[str, dict[int, np.ndarray]]:
    """Write the Severstal layout: ``root/train.csv`` (``ImageId,ClassId,EncodedPixels``) + ``train_images/``.

    ``n_clean`` images have no row; ``n_per_class`` images per ClassId 1..4 have one defect of that class;
    ``n_multi`` images per pair (1, 2), (3, 4) have a small defect of the lower class and a larger one of
    the higher. Masks are run-length encoded with :func:`datamodules.rle.rle_encode` over ``size`` = (H, W).
    Returns the masks written: ``{ImageId: {ClassId: bool mask}}`` (defect-free images absent).
    """
    root = Path(root)
    images = root / "train_images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    height, width = size
    plans: list[list[tuple[int, int]]] = [[] for _ in range(n_clean)]  # (ClassId, box scale) per defect
    plans += [[(c, 4)] for c in range(1, 5) for _ in range(n_per_class)]
    plans += [[(low, 2), (low + 1, 8)] for low in (1, 3) for _ in range(n_multi)]
    written: dict[str, dict[int, np.ndarray]] = {}
    rows = ["ImageId,ClassId,EncodedPixels"]
    for i, plan in enumerate(plans):
        image_id = f"{i:04x}{int(rng.integers(1 << 16)):04x}a.jpg"
        image = steel_texture(rng, height, width)
        masks: dict[int, np.ndarray] = {}
        for k, (class_id, scale) in enumerate(plan):
            mask = np.zeros((height, width), dtype=bool)
            x0 = k * width // 2 + int(rng.integers(0, width // 4))
            y0 = int(rng.integers(0, height // 2))
            mask[y0 : y0 + height // 4 * (1 + scale // 4), x0 : x0 + scale * width // 40] = True
            image[mask] *= 0.4
            masks[class_id] = mask
            rows.append(f"{image_id},{class_id},{rle_encode(mask)}")
        Image.fromarray(image.astype(np.uint8), mode="L").convert("RGB").save(images / image_id, quality=95)
        if masks:
            written[image_id] = masks
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return written


def write_dagm(
    root: str | Path,
    textures: tuple[int, ...] = (1, 2),
    n_per_split: int = 6,
    defective_every: int = 3,
    size: tuple[int, int] = (48, 48),
    seed: int = 0,
) -> Path:
    """Write the DAGM 2007 layout: ``ClassN/{Train,Test}/NNNN.PNG``, ``Label/Labels.txt``, ``NNNN_label.PNG``.

    ``Labels.txt`` has a header line, then tab-separated rows ``index  defective  image  0  label-or-0``.
    Every ``defective_every``-th image is defective, with an elliptic-ish blob in its 0/255 label image.
    Image numbers start at 1 in Test and run on into Train (Test 0001-0575, Train 0576-1150 for Class1 of the
    release). Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    height, width = size
    for texture in textures:
        for split in ("Train", "Test"):
            number = 1 if split == "Test" else n_per_split + 1
            folder = root / f"Class{texture}" / split
            (folder / "Label").mkdir(parents=True, exist_ok=True)
            lines = ["1"]
            for i in range(n_per_split):
                image = steel_texture(rng, height, width) + 5 * texture
                mask = np.zeros((height, width), dtype=np.uint8)
                name = f"{number:04d}.PNG"
                label_name = "0"
                if i % defective_every == defective_every - 1:
                    yy, xx = np.ogrid[:height, :width]
                    cy = rng.integers(height // 4, 3 * height // 4)
                    cx = rng.integers(width // 4, 3 * width // 4)
                    blob = ((yy - cy) / (height / 8)) ** 2 + ((xx - cx) / (width / 5)) ** 2 <= 1
                    image[blob] *= 0.5
                    mask[blob] = 255
                    label_name = f"{number:04d}_label.PNG"
                    Image.fromarray(mask, mode="L").save(folder / "Label" / label_name)
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L").save(folder / name)
                lines.append(f"{i + 1}\t{int(label_name != '0')}\t{name}\t0\t{label_name}")
                number += 1
            (folder / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n")
    return root


def write_folder(
    root: str | Path,
    classes: tuple[str, ...] = ("good", "scratch"),
    per_class: int = 3,
    size: tuple[int, int] = (32, 32),
    masks_root: str | Path | None = None,
    defect_free_class: str = "good",
    seed: int = 0,
) -> Path:
    """Write a user's folder layout: ``root/<class>/NNN.png``, and with ``masks_root`` the masks
    ``masks_root/<class>/NNN.png`` (0/255) of every image outside ``defect_free_class``. Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    height, width = size
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            image = steel_texture(rng, height, width) + 8 * k
            mask = np.zeros((height, width), dtype=np.uint8)
            if name != defect_free_class:
                x0, y0, x1, y1 = random_box(rng, height, width)
                image[y0:y1, x0:x1] *= 0.4
                mask[y0:y1, x0:x1] = 255
                if masks_root is not None:
                    (Path(masks_root) / name).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(mask, mode="L").save(Path(masks_root) / name / f"{n:03d}.png")
            pixels = np.clip(image, 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / name / f"{n:03d}.png")
    return root
