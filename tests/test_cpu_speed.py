"""benchmarks/cpu_speed.py's int8 path: the int8 ONNX runner is built and runs, and the summary takes it as the
fastest backend only where its test-fold AP was checked (benchmarks/int8_accuracy.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.cpu_speed import inference_runners, summary
from benchmarks.int8_accuracy import INT8_GRAPH, int8_allowed, int8_graph
from lightning_modules.weak.networks import WeakDefectNet


def test_inference_runners_include_int8_on_a_tiny_image(tmp_path: Path) -> None:
    net = WeakDefectNet().eval()  # the benchmark's own network; 64x64, its smallest ONNX size
    image = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        runners = inference_runners(net, image, tmp_path)
        heatmap, _, logit = runners["onnx_int8"](image)
    assert (tmp_path / "model_int8.onnx").is_file()
    assert heatmap.shape == (1, 1, 8, 8) and logit.shape == (1,)


def checked(delta: float) -> str:
    """An int8_accuracy JSON of today's int8 graph with this AP difference."""
    return json.dumps({"metrics": {"ap_delta": delta, "int8_graph": INT8_GRAPH}})


def timings(seconds: dict[str, float]) -> dict:
    return {"gflop_per_image_direct": 100.0, "seconds_per_image": {k: {"batch1": v} for k, v in seconds.items()}}


@pytest.mark.parametrize("allow_int8", [False, True])
def test_summary_takes_int8_only_where_allowed(allow_int8: bool) -> None:
    infer = timings({"eager": 4.0, "onnx_all": 3.0, "torch_bf16": 2.0, "onnx_int8": 1.0})
    train = {"seconds": {"eager": 2.0, "one_thread": 3.0}, "gflop_per_step": 10.0}
    result = summary(100.0, infer, train, {"gflop_per_step": 1.0, "seconds_eager": 1.0}, allow_int8)
    assert result["inference_backend"] == ("onnx_int8" if allow_int8 else "torch_bf16")
    assert result["inference_backend_float32"] == "onnx_all" and result["inference_s_1408x512_float32"] == 3.0
    assert result["inference_s_1408x512_int8"] == 1.0 and result["int8_allowed"] is allow_int8


def test_summary_takes_the_headline_from_paired_rounds_against_the_best_probe() -> None:
    """Paired rounds replace the per-backend medians of their backends; the peak is the best probe of the run (the
    start probe too), so the recorded product ``inference_s * peak / gflop`` is the conservative one."""
    infer = timings({"eager": 4.0, "onnx_all": 3.0, "onnx_int8": 2.5})
    infer["paired"] = {"onnx_all": {"peak_gflops": [80.0, 120.0, 100.0], "seconds": [3.0, 2.0, 2.2]},
                       "onnx_int8": {"peak_gflops": [90.0, 110.0, 100.0], "seconds": [1.0, 1.2, 1.1]}}
    train = {"seconds": {"eager": 2.0, "one_thread": 3.0}, "gflop_per_step": 10.0}
    result = summary(100.0, infer, train, {"gflop_per_step": 1.0, "seconds_eager": 1.0}, True)
    assert result["peak_gflops"] == 120.0
    assert result["inference_backend"] == "onnx_int8" and result["inference_s_1408x512"] == pytest.approx(1.1)
    assert result["inference_s_1408x512_float32"] == pytest.approx(2.2)
    assert result["inference_ratio_to_direct_at_peak"] == pytest.approx(1.1 * 120.0 / 100.0)
    assert result["inference_ratio_paired_median"] == pytest.approx(1.1)  # rounds: 0.90, 1.32, 1.10
    assert summary(200.0, infer, train, {"gflop_per_step": 1.0, "seconds_eager": 1.0}, True)["peak_gflops"] == 200.0
    # an unpaired median faster than the paired one does not become the headline
    infer["seconds_per_image"]["fourier_rows"] = {"batch1": 1.5}
    again = summary(100.0, infer, train, {"gflop_per_step": 1.0, "seconds_eager": 1.0}, True)
    assert again["inference_backend_float32"] == "onnx_all"
    assert again["inference_s_1408x512_float32"] == pytest.approx(2.2)


@pytest.mark.parametrize(("delta", "allowed"), [(-0.004, True), (0.005, True), (-0.006, False), (None, False)])
def test_int8_is_allowed_within_0_005_of_float32_ap(tmp_path: Path, delta: float | None, allowed: bool) -> None:
    if delta is not None:
        (tmp_path / "int8_accuracy.json").write_text(checked(delta))
    assert int8_allowed(tmp_path) is allowed


def test_int8_needs_every_checked_fold_within_0_005(tmp_path: Path) -> None:
    """One JSON per checked fold (int8_accuracy.json, int8_accuracy_fold1.json, ...): one fold outside the tolerance
    is enough to keep int8 out."""
    for name, delta in (("int8_accuracy", 0.003), ("int8_accuracy_fold1", -0.001)):
        (tmp_path / f"{name}.json").write_text(checked(delta))
    assert int8_allowed(tmp_path)
    (tmp_path / "int8_accuracy_fold2.json").write_text(checked(-0.02))
    assert not int8_allowed(tmp_path)


def test_a_check_of_another_int8_graph_does_not_count(tmp_path: Path) -> None:
    """A check made before LNet's Fourier path (its 15x15 quantised too) carries no ``int8_graph``."""
    (tmp_path / "int8_accuracy.json").write_text(json.dumps({"metrics": {"ap_delta": 0.001}}))
    assert not int8_allowed(tmp_path)
    (tmp_path / "int8_accuracy.json").write_text(checked(0.001))
    assert int8_allowed(tmp_path)


def test_the_default_network_quantises_to_the_checked_graph() -> None:
    assert int8_graph(WeakDefectNet(lnet_wide=8)) == INT8_GRAPH
    assert int8_graph(WeakDefectNet(lnet_wide=8, lnet_fourier=False)) == "direct"
    assert int8_graph(WeakDefectNet(lnet_wide=8, lnet_kernel=5)) == "direct"  # too narrow: the direct path
