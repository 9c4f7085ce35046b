"""benchmarks/int8_accuracy.py: float32 and int8 ONNX scores of a trained fold's test images, for every exportable
method (the weak model and the baseline), and which checks gate the weak net's int8 in cpu_speed.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.int8_accuracy import INT8_GRAPH, int8_allowed, int8_graph, measure
from lightning_modules.baseline.networks import CamClassifier
from lightning_modules.checkpoints import load_trained_model
from tests.inference_helpers import train_baseline, weak_checkpoint


@pytest.mark.parametrize("method", ["weak", "baseline"])
def test_measures_both_files_on_the_test_fold(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                                              method: str) -> None:
    ckpt = (weak_checkpoint(tmp_path_factory.getbasetemp()) if method == "weak"
            else train_baseline(tmp_path / "baseline_run"))
    test = load_trained_model(ckpt).datamodule().test_samples
    metrics = measure(ckpt, [], n_calibration=4)
    assert metrics["method"] == method and metrics["fold"] == 0
    assert metrics["n_test_images"] == len(test) and metrics["n_test_defective"] == sum(s.label for s in test)
    assert metrics["n_calibration_images"] == 4
    assert 0.0 <= metrics["ap_fp32"] <= 1.0 and 0.0 <= metrics["ap_int8"] <= 1.0
    assert metrics["ap_delta"] == pytest.approx(metrics["ap_int8"] - metrics["ap_fp32"])
    assert metrics["int8_within_tolerance"] is (abs(metrics["ap_delta"]) <= metrics["ap_tolerance"])
    assert 0.0 <= metrics["max_abs_probability_diff"] < 1.0
    assert metrics["int8_graph"] == (INT8_GRAPH if method == "weak" else "all_int8")


def test_a_baseline_check_does_not_gate_the_weak_nets_int8(tmp_path: Path) -> None:
    """cpu_speed.py times the weak net; a check of the baseline's network (``method: baseline``) says nothing of it,
    whatever its AP difference."""
    weak = {"method": "weak", "metrics": {"ap_delta": 0.001, "int8_graph": INT8_GRAPH}}
    baseline = {"method": "baseline", "metrics": {"ap_delta": -0.2, "int8_graph": "all_int8"}}
    (tmp_path / "int8_accuracy_baseline_elpv.json").write_text(json.dumps(baseline))
    assert not int8_allowed(tmp_path)  # no weak check at all
    (tmp_path / "int8_accuracy.json").write_text(json.dumps(weak))
    assert int8_allowed(tmp_path)
    assert int8_graph(CamClassifier()) == "all_int8"
