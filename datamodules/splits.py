"""Fold assignment by group, and reading the official split pickles safely."""

from __future__ import annotations

import pickle
import random
from collections.abc import Mapping
from pathlib import Path

from datamodules.errors import DatasetError


class _NoGlobalsUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global: only lists, tuples, dicts, strings, numbers and bools load."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - the pickle protocol
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def load_split_pickle(path: str | Path) -> object:
    """Load an official ``.pyb`` split file with a restricted unpickler."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _NoGlobalsUnpickler(handle).load()
    except (OSError, pickle.UnpicklingError, EOFError) as err:
        raise DatasetError(f"cannot read split file {path}: {err}") from err


def ksdd_split_from_pickle(path: str | Path) -> tuple[list[list[str]], list[list[str]]]:
    """The KolektorSDD split ``(train_folds, test_folds)``: per fold, the training folders and the test folders."""
    content = load_split_pickle(path)
    try:
        train_folds, test_folds = content  # type: ignore[misc]
        train = [[str(item[0]) for item in fold] for fold in train_folds]
        test = [[str(item) if isinstance(item, str) else str(item[0]) for item in fold] for fold in test_folds]
    except (TypeError, ValueError, IndexError) as err:
        raise DatasetError(f"split file {path} is not a KolektorSDD (train_folds, test_folds) pair") from err
    return train, test


def assign_group_folds(strata: Mapping[str, str], num_folds: int, seed: int) -> dict[str, int]:
    """Assign each group to a fold, stratified: the groups of each stratum are dealt round-robin.

    ``strata`` maps a group to its stratum (e.g. its class, or defective vs defect-free). The dealing
    continues across strata, so fold sizes differ by at most one group overall.
    """
    rng = random.Random(seed)
    assignment: dict[str, int] = {}
    offset = 0
    for stratum in sorted(set(strata.values())):
        groups = sorted(g for g, s in strata.items() if s == stratum)
        rng.shuffle(groups)
        for i, group in enumerate(groups):
            assignment[group] = (i + offset) % num_folds
        offset += len(groups)
    return assignment
