"""The CPU presets train in bf16-mixed only where the CPU runs bf16 natively (workflow/precision.py)."""

from __future__ import annotations

import logging

import pytest
import torch

from tests.helpers import compose_cfg
from workflow import precision
from workflow.precision import cpu_precision, native_bf16
from workflow.run_info import device_description


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_bf16_only_where_the_cpu_runs_it_natively(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                                  native: bool, expected: str) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    precision._warn_fallback.cache_clear()
    with caplog.at_level(logging.WARNING, logger="workflow.precision"):
        assert cpu_precision("bf16-mixed") == expected
        assert cpu_precision("bf16-mixed") == expected
    fallbacks = [r for r in caplog.records if "no native bfloat16" in r.getMessage()]
    assert len(fallbacks) == (0 if native else 1)  # said once, however often the config is resolved


@pytest.mark.parametrize("asked", ["32-true", "16-mixed", "64-true"])
def test_other_precisions_pass_through(monkeypatch: pytest.MonkeyPatch, asked: str) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    assert cpu_precision(asked) == asked


@pytest.mark.parametrize(("accelerator", "cuda", "expected"),
                         [("gpu", False, "bf16-mixed"), ("cuda", False, "bf16-mixed"), ("cpu", True, "32-true"),
                          ("auto", True, "bf16-mixed"), ("auto", False, "32-true")])
def test_only_a_run_on_the_cpu_falls_back(monkeypatch: pytest.MonkeyPatch, accelerator: str, cuda: bool,
                                          expected: str) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert cpu_precision("bf16-mixed", accelerator) == expected


@pytest.mark.parametrize("experiment", ["cluster_neu_cpu", "weak_kolektor_cpu"])
def test_cpu_presets_resolve_to_this_cpus_precision_and_an_override_wins(experiment: str) -> None:
    expected = "bf16-mixed" if native_bf16() else "32-true"
    assert compose_cfg([f"experiment={experiment}"]).trainer.precision == expected
    assert compose_cfg([f"experiment={experiment}", "trainer.precision=bf16-mixed"]).trainer.precision == "bf16-mixed"
    assert compose_cfg([f"experiment={experiment}", "trainer=gpu"]).trainer.precision == "bf16-mixed"


def test_the_device_of_a_cpu_run_names_its_vector_instructions_and_bf16() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU run names the GPU")
    description = device_description()
    assert torch.backends.cpu.get_cpu_capability() in description
    assert ("no native bf16" in description) is not native_bf16()
