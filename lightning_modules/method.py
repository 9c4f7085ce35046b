"""The method contract: what ``train.py``, ``predict.py``, ``export.py`` and the benchmarks may ask of a method,
and the registry they find methods in.

A method is a :class:`DefectMethod` (a LightningModule) registered under a short name with
:func:`register_method`. By convention the name is also its folder, ``lightning_modules/<name>/``, whose
``__init__`` imports the module class: :func:`method_class` imports that folder on first use, so a method's
dependencies (e.g. timm) load only when it is asked for. Every checkpoint a method saves records its name
(:data:`METHOD_KEY`), which :func:`method_of` reads back.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from lightning_modules.exporters import ExportTarget

#: the checkpoint key under which a method's registry name is saved
METHOD_KEY = "defect_method"

#: every registered method by name
METHODS: dict[str, type[DefectMethod]] = {}

M = TypeVar("M", bound="type[DefectMethod]")


class DefectMethod(L.LightningModule, ABC):
    """What every method provides.

    Class attributes:
        name: the registry name (set by :func:`register_method`).
        metric_names: the pooled metrics that summarise a run, headline first (the results table's columns).
        prediction_columns: the per-image scalar outputs of :meth:`predict_images`, in CSV order.
        tests_training_images: True: the test loaders are ``[training images, test images]`` (the weak method
            fixes its threshold on the first); False: ``[test images]`` only.
        thresholded: ``probability`` in :meth:`predict_images` is a defect probability that a threshold turns
            into a ``label`` column.
        min_side: the smallest image side :meth:`predict_images` takes.
        exportable: whether :meth:`export_target` gives a module to export (ONNX, TorchScript).

    Instance state:
        last_validation: the figures of the last validation on held-out training images (``data.val_fraction``),
            set by :meth:`record_validation`; absent without validation data.
        fold_result: set at the end of ``trainer.test``: ``{"metrics": {...}, "per_image": {"ids": ..., ...}}``
            (tensors and plain values: saved and read back with ``weights_only=True``), plus what
            :meth:`pool` needs of the fold.
    """

    name: ClassVar[str] = ""
    metric_names: ClassVar[tuple[str, ...]] = ()
    prediction_columns: ClassVar[tuple[str, ...]] = ()
    tests_training_images: ClassVar[bool] = False
    thresholded: ClassVar[bool] = False
    min_side: ClassVar[int] = 1
    exportable: ClassVar[bool] = False

    fold_result: dict[str, Any]
    last_validation: dict[str, float]

    @property
    @abstractmethod
    def max_steps(self) -> int:
        """Optimizer steps of one fold's training: the trainer's ``max_steps``."""

    @classmethod
    @abstractmethod
    def pool(cls, fold_results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Metrics over all folds from their :attr:`fold_result` dicts."""

    @abstractmethod
    def predict_images(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs for a batch (N, C, H, W) of [0, 1] images: tensors of shape (N,) named as in
        :attr:`prediction_columns`, and optionally ``"heatmap"`` (N, 1, h, w) in [0, 1]."""

    def export_target(self) -> ExportTarget:
        """The inference module to export, its output names and smallest dynamic side."""
        raise TypeError(f"method {self.name!r} does not export (exportable methods: {exportable_methods()})")

    def save_config_hyperparameters(self) -> None:
        """``save_hyperparameters`` of the calling ``__init__``, in a form ``torch.load(weights_only=True)``
        reads back: OmegaConf containers become plain ones. Arguments given as objects (a built network, a
        partial optimizer) rather than configs are left out: ``load_from_checkpoint`` then needs them passed."""
        frame = inspect.currentframe().f_back  # type: ignore[union-attr]
        arguments = inspect.getargvalues(frame)  # type: ignore[arg-type]
        objects = [n for n in arguments.args[1:] if not is_plain(arguments.locals[n])]
        self.save_hyperparameters(ignore=objects, frame=frame)
        for key, value in list(self._hparams.items()):
            if isinstance(value, DictConfig | ListConfig):
                self._hparams[key] = OmegaConf.to_container(value, resolve=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[METHOD_KEY] = self.name

    def record_validation(self, values: Mapping[str, float]) -> None:
        """Log a validation's figures as ``val/<name>``; unless it is the sanity check (a few batches of the
        untrained model), keep them as :attr:`last_validation` (``val_<name>`` and ``val_step``), which each
        method adds to its fold's metrics: what settings are chosen on (``benchmarks/select_on_validation.py``)."""
        self.log_dict({f"val/{k}": v for k, v in values.items()})
        if not self.trainer.sanity_checking:
            self.last_validation = {f"val_{k}": v for k, v in values.items()} | {"val_step": int(self.global_step)}


def is_plain(value: Any) -> bool:
    """Whether ``value`` is None, a bool, number or string, or a list/tuple/dict/OmegaConf container of those."""
    if isinstance(value, DictConfig | ListConfig):
        return True
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(is_plain(k) and is_plain(v) for k, v in value.items())
    return False


def from_config(value: Any) -> Any:
    """A config mapping with ``_target_`` instantiated (``_partial_`` honoured); anything else as given. Methods
    take their sub-objects (network, optimizer, training plan) as configs and build them with this, so that
    their hyper-parameters stay plain and rebuild them (``load_from_checkpoint``)."""
    if isinstance(value, Mapping | DictConfig) and "_target_" in value:
        return instantiate(value, _convert_="all")
    return value


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: register a :class:`DefectMethod` under ``name`` (its folder's name by convention)."""

    def register(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, DefectMethod)):
            raise TypeError(f"register_method({name!r}): {cls!r} is not a DefectMethod subclass")
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method name {name!r} is already registered by {METHODS[name].__qualname__}")
        cls.name = name
        METHODS[name] = cls
        return cls

    return register


def method_class(name: str) -> type[DefectMethod]:
    """The method registered as ``name``, importing ``lightning_modules.<name>`` first where needed."""
    if name not in METHODS:
        try:
            importlib.import_module(f"lightning_modules.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"lightning_modules.{name}":
                raise
    if name not in METHODS:
        raise ValueError(f"no method named {name!r}; registered: {sorted(all_methods())}")
    return METHODS[name]


def all_methods() -> dict[str, type[DefectMethod]]:
    """Every method: each folder of ``lightning_modules/`` imported, then the registry."""
    package = Path(__file__).parent
    for info in pkgutil.iter_modules([str(package)]):
        if info.ispkg:
            importlib.import_module(f"lightning_modules.{info.name}")
    return dict(METHODS)


def exportable_methods() -> list[str]:
    """The names of the methods that export."""
    return sorted(name for name, cls in all_methods().items() if cls.exportable)


def method_of(thing: Any) -> type[DefectMethod]:
    """The method of a module or module class, of a model config (its ``_target_``), or of a checkpoint file
    (the name it saved under :data:`METHOD_KEY`; read safely, see
    :func:`lightning_modules.checkpoints.read_checkpoint`)."""
    if isinstance(thing, DefectMethod):
        return type(thing)
    if isinstance(thing, type) and issubclass(thing, DefectMethod):
        return thing
    if isinstance(thing, Mapping | DictConfig) and "_target_" in thing:
        return _registered(get_class(str(thing["_target_"])), f"model._target_={thing['_target_']}")
    if isinstance(thing, str | Path):
        from lightning_modules.checkpoints import checkpoint_method

        return method_class(checkpoint_method(Path(thing)))
    raise TypeError(f"cannot tell the method of {type(thing).__name__}")


def _registered(cls: type, source: str) -> type[DefectMethod]:
    if not issubclass(cls, DefectMethod) or METHODS.get(cls.name) is not cls:
        raise ValueError(f"{source}: {cls.__qualname__} is not a registered method ({sorted(METHODS)})")
    return cls


def build_method(model: DictConfig | Mapping, optimizer: DictConfig | Mapping | None) -> DefectMethod:
    """The method of a ``model`` config with the ``optimizer`` config, its sub-configs (network, optimizer,
    training plan) handed to it as plain configs (``_recursive_=False``), which it instantiates itself."""
    module = instantiate(model, optimizer=optimizer, _recursive_=False, _convert_="all")
    _registered(type(module), f"model._target_={model['_target_']}")
    return module
