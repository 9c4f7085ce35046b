"""benchmarks/run.py refuses to record a result from a working tree with uncommitted changes; every result records
the same fields; the README's results table shows a result's nested numbers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from evaluation.run_info import require_clean_tree, write_result
from tests.conftest import PROJECT_ROOT


def load_script(name: str):  # noqa: ANN201 - the module benchmarks/<name>.py
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", PROJECT_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_dirty_tree_is_refused_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = load_script("run")
    monkeypatch.setattr("evaluation.run_info.git_commit", lambda cwd=None: "0123abc-dirty")
    ran: list = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: ran.append(a))
    with pytest.raises(SystemExit, match="uncommitted changes.*--allow-dirty"):
        runner.main(["probe", "experiment=demo"])
    assert not ran


def test_a_clean_tree_passes_and_dirty_is_allowed_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("evaluation.run_info.git_commit", lambda cwd=None: "0123abc")
    assert require_clean_tree("x") == "0123abc"
    monkeypatch.setattr("evaluation.run_info.git_commit", lambda cwd=None: "0123abc-dirty")
    assert require_clean_tree("x", allow_dirty=True) == "0123abc-dirty"


def test_the_results_table_flattens_nested_numbers_and_leaves_out_the_rest() -> None:
    flatten = load_script("results_table").flatten
    metrics = {"N": 1800, "native_bf16": False, "cpu_capability": "AVX2",
               "seconds": {"train_step": {"32-true": 4.5, "bf16-mixed": 44.2}}}
    assert flatten(metrics) == {"N": 1800, "seconds.train_step.32-true": 4.5, "seconds.train_step.bf16-mixed": 44.2}


def test_a_result_records_command_commit_device_date_and_wall_time(tmp_path: Path) -> None:
    returned = write_result(tmp_path / "results", "probe", "python benchmarks/x.py --y", "0123abc", 12.345,
                            {"acc": 0.5}, run_dir="outputs/x")
    record = json.loads((tmp_path / "results" / "probe.json").read_text())
    assert record == returned
    assert list(record) == ["name", "command", "commit", "device", "date", "wall_s", "packages", "run_dir", "metrics"]
    assert (record["command"], record["commit"], record["wall_s"], record["metrics"]) == (
        "python benchmarks/x.py --y", "0123abc", 12.3, {"acc": 0.5})
    assert record["date"].endswith("+00:00") and "torch" in record["packages"]
