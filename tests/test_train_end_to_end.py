"""``python train.py experiment=demo`` end to end in a subprocess: folds, metrics files, pictures, AP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchmetrics.functional.classification import binary_average_precision

from tests.conftest import PROJECT_ROOT


def test_demo_experiment_writes_the_report_and_beats_chance(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline"}
    out = subprocess.run(
        [sys.executable, "train.py", "experiment=demo", f"paths.data_dir={tmp_path / 'data'}",
         f"hydra.run.dir={run_dir}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((run_dir / "metrics.json").read_text())
    assert [f["fold"] for f in report["folds"]] == [0, 1, 2]
    pooled = report["pooled"]
    for key in ("ap", "false_calls", "false_calls_fixed", "fp_at_full_recall"):
        assert key in pooled and all(key in f for f in report["folds"])
    assert isinstance(report["warnings"], list)  # what went wrong (workflow/run_warnings.py); the demo trains fine
    assert all(f["stage1_q_defective"] >= 0.05 for f in report["folds"]), report["folds"]  # LNet not dark
    prevalence = pooled["n_defective"] / pooled["n_images"]
    assert pooled["ap"] > prevalence + 0.3, pooled  # chance AP is the prevalence
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["fold"] for r in rows] == ["0", "1", "2", "pooled"]
    assert "| pooled |" in out.stdout
    pictures = sorted((run_dir / "fold0" / "heatmaps").glob("*.png"))
    assert pictures, "no heat-map pictures were saved"
    for fold in range(3):
        assert (run_dir / f"fold{fold}" / "checkpoints" / "stage3-joint.ckpt").is_file()
        assert (run_dir / f"fold{fold}" / "predictions.csv").is_file()
    # pooled metrics rank each fold's scores moved onto the shared scale (score_pooled), the raw ones are reported too
    labels, shared = [], []
    for fold in range(3):
        with open(run_dir / f"fold{fold}" / "predictions.csv") as handle:
            rows = list(csv.DictReader(handle))
        labels += [int(r["label"]) for r in rows]
        shared += [float(r["score_pooled"]) for r in rows]
        assert isinstance(report["folds"][fold]["pool_offset"], float)
    assert pooled["ap"] == pytest.approx(float(binary_average_precision(torch.tensor(shared), torch.tensor(labels))),
                                         abs=1e-6)
    assert {"ap_raw", "fp_at_full_recall_raw"} <= set(pooled)
    info = json.loads((run_dir / "run_info.json").read_text())
    assert {"commit", "packages", "device"} <= set(info)
