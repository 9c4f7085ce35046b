"""NEU surface defect database (Song and Yan 2013): 6 classes of hot-rolled steel defects, 300 images each.

Two official releases, both read by :func:`list_neu_samples`:

* NEU-CLS: ``<root>/Cr_1.bmp``, ``In_*.bmp``, ``Pa_*``, ``PS_*``, ``RS_*``, ``Sc_*`` (200x200 grayscale
  BMP; the prefix before the first underscore is the class), in ``root`` or in its single subfolder.
* NEU-DET: ``<root>/IMAGES/<class>_<n>.jpg`` + ``<root>/ANNOTATIONS/<class>_<n>.xml`` (Pascal VOC boxes),
  e.g. ``rolled-in_scale_12.jpg``; the class is the longest known class name the file name starts with.

Every image is defective (``label`` 1), its own group, with ``target`` = the class index in
:data:`NEU_CLASSES`. NEU-DET boxes are parsed by :func:`read_voc_boxes` (and
:meth:`NEUDataModule.boxes`) but not used as masks: ``mask`` is ``None``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from datamodules.base import DefectDataModule
from datamodules.errors import DatasetError
from datamodules.image_files import image_files
from datamodules.samples import Sample

#: The class names in target order.
NEU_CLASSES: list[str] = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
#: NEU-CLS file-name prefixes (compared case-insensitively) -> class index.
NEU_CLS_PREFIXES: dict[str, int] = {"cr": 0, "in": 1, "pa": 2, "ps": 3, "rs": 4, "sc": 5}

Box = tuple[int, int, int, int]


def natural_key(path: Path) -> tuple:
    """Sort ``crazing_2`` before ``crazing_10``."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name))


def _image_files(folder: Path) -> list[Path]:
    return image_files(folder, key=natural_key)


def _child_dir(folder: Path, name: str) -> Path | None:
    """The subfolder of ``folder`` called ``name``, compared case-insensitively."""
    return next((p for p in folder.iterdir() if p.is_dir() and p.name.lower() == name.lower()), None)


def neu_cls_class(image: Path) -> int:
    """The class index of a NEU-CLS file ``<Prefix>_<n>.bmp``; an unknown prefix is an error naming it."""
    prefix = image.name.split("_", 1)[0].lower()
    if "_" not in image.name or prefix not in NEU_CLS_PREFIXES:
        raise DatasetError(
            f"NEU-CLS image {image} has an unknown class prefix: expected one of "
            f"Cr_, In_, Pa_, PS_, RS_, Sc_"
        )
    return NEU_CLS_PREFIXES[prefix]


def neu_det_class(image: Path) -> int:
    """The class index of a NEU-DET file ``<class>_<n>.jpg``: the longest class name it starts with."""
    stem = image.stem.lower()
    matches = [k for k, name in enumerate(NEU_CLASSES) if stem.startswith(name)]
    if not matches:
        raise DatasetError(
            f"NEU-DET image {image} does not start with a class name: {', '.join(NEU_CLASSES)}"
        )
    return max(matches, key=lambda k: len(NEU_CLASSES[k]))


def read_voc_boxes(xml_path: str | Path) -> list[Box]:
    """The ``(xmin, ymin, xmax, ymax)`` boxes of a Pascal VOC annotation (``<object><bndbox>``).

    Malformed XML, a box without its four coordinates or a non-numeric coordinate is a
    :class:`DatasetError` naming the file.
    """
    xml_path = Path(xml_path)
    try:
        tree = ET.parse(xml_path)
    except (ET.ParseError, OSError) as err:
        raise DatasetError(f"cannot read VOC annotation {xml_path}: {err}") from err
    boxes: list[Box] = []
    for number, bndbox in enumerate(tree.getroot().iter("bndbox"), start=1):
        values = []
        for key in ("xmin", "ymin", "xmax", "ymax"):
            text = bndbox.findtext(key)
            try:
                values.append(round(float(text)))  # type: ignore[arg-type]
            except (TypeError, ValueError) as err:
                raise DatasetError(
                    f"VOC annotation {xml_path}: box {number} has no numeric <{key}> (got {text!r})"
                ) from err
        boxes.append((values[0], values[1], values[2], values[3]))
    return boxes


def _neu_sample(image: Path, target: int) -> Sample:
    return Sample(name=image.stem, image=image, label=1, group=image.stem, target=target)


def list_neu_cls_samples(folder: str | Path) -> list[Sample]:
    """Every image of a NEU-CLS folder (``Cr_1.bmp`` ...), class from the prefix."""
    return [_neu_sample(image, neu_cls_class(image)) for image in _image_files(Path(folder))]


def list_neu_det_samples(folder: str | Path) -> list[Sample]:
    """Every image of ``<folder>/IMAGES`` of a NEU-DET release; the annotation xml files are optional."""
    images = _child_dir(Path(folder), "IMAGES")
    if images is None:
        raise DatasetError(
            f"no IMAGES folder under {folder}: expected the NEU-DET layout IMAGES/<class>_<n>.jpg"
        )
    return [_neu_sample(image, neu_det_class(image)) for image in _image_files(images)]


def find_neu_layout(root: str | Path) -> tuple[str, Path]:
    """``("det", folder)`` or ``("cls", folder)``: ``root`` or its single subfolder, whichever holds NEU."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"NEU root {root} does not exist")
    candidates = [root]
    subfolders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subfolders) == 1:
        candidates.append(subfolders[0])
    for folder in candidates:
        if _child_dir(folder, "IMAGES") is not None:
            return "det", folder
        if _image_files(folder):
            return "cls", folder
    raise DatasetError(
        f"no NEU images under {root}: expected NEU-CLS files Cr_1.bmp ... or NEU-DET IMAGES/<class>_<n>.jpg"
    )


def list_neu_samples(root: str | Path) -> list[Sample]:
    """All images of a NEU-CLS or NEU-DET release under ``root`` (see the module docstring)."""
    layout, folder = find_neu_layout(root)
    samples = list_neu_det_samples(folder) if layout == "det" else list_neu_cls_samples(folder)
    if not samples:
        raise DatasetError(f"no NEU images under {folder}")
    return samples


def neu_annotation(image: str | Path) -> Path | None:
    """The VOC xml of a NEU-DET image (``../ANNOTATIONS/<stem>.xml``), or ``None`` when it has none."""
    image = Path(image)
    annotations = _child_dir(image.parent.parent, "ANNOTATIONS")
    if annotations is None:
        return None
    xml = annotations / f"{image.stem}.xml"
    return xml if xml.is_file() else None


class NEUDataModule(DefectDataModule):
    """NEU-CLS or NEU-DET (detected from the layout), 6 classes, folds stratified by class.

    All images are defective, so the weakly supervised method (which needs defect-free images) cannot
    train on it; splitting and decoding work as for every dataset.
    """

    classes: list[str] = list(NEU_CLASSES)
    download_hint = (
        "get the NEU surface defect database (NEU-CLS or NEU-DET) from "
        "http://faculty.neu.edu.cn/songkechen/zh_CN/zdylm/263270/list/index.htm and set data.root=<folder "
        "holding Cr_1.bmp ... or IMAGES/ + ANNOTATIONS/>, or data.archive=<path to NEU-DET.zip>"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("image_size", (200, 200))
        super().__init__(*args, **kwargs)

    def list_samples(self) -> list[Sample]:
        return list_neu_samples(self.dataset_dir)

    def boxes(self, sample: Sample) -> list[Box]:
        """The NEU-DET VOC boxes of ``sample`` (empty for NEU-CLS or an image without annotation)."""
        xml = neu_annotation(sample.image)
        return read_voc_boxes(xml) if xml is not None else []
