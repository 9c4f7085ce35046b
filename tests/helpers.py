"""Assertions shared by the DataModule tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from datamodules import DefectDataModule, Sample


def fold_test_sets(make_fold: Callable[[int], DefectDataModule], samples: Sequence[Sample],
                   num_folds: int = 3) -> list[list[Sample]]:
    """Split ``samples`` with each fold's DataModule; assert train and test are disjoint and the test sets
    partition ``samples``; return the test sets (for the caller's stratification checks)."""
    tests = []
    for fold in range(num_folds):
        train, test = make_fold(fold).split(list(samples))
        assert not {s.name for s in train} & {s.name for s in test}
        tests.append(test)
    seen = sorted(s.name for test in tests for s in test)
    assert seen == sorted(s.name for s in samples)
    return tests
