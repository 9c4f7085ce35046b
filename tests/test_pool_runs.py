"""workflow/pool_runs.py: folds run as separate train.py runs pool to the report one run of all of them writes; runs
of different settings, a fold twice and folders without a finished fold are refused."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import open_dict

import train
from datamodules.synthetic import write_kolektor_like
from tests.helpers import compose_cfg
from workflow.errors import SettingError
from workflow.pool_runs import main, pool_runs

FAST = ["experiment=demo", "debug=fast", "logger=none", "print_config=false", "callbacks=none",
        "trainer.enable_model_summary=false", "data.num_folds=3"]


def train_run(out_dir: Path, root: Path, folds: str, *overrides: str) -> Path:
    """``train.py`` in this process, with the overrides file a command-line run gets from Hydra."""
    arguments = [*FAST, f"data.root={root}", "data.archive=null", f"folds={folds}", *overrides]
    cfg = compose_cfg(arguments)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
    train.main(cfg)
    (out_dir / ".hydra").mkdir()
    (out_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*arguments, f"hydra.run.dir={out_dir}"]))
    return out_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One run of folds 0 and 1, and the same folds as two runs (the second a second later)."""
    base = tmp_path_factory.mktemp("pool")
    root = write_kolektor_like(base / "ksdd", num_folders=6, parts_per_folder=2, size=(64, 32), seed=3)
    both = train_run(base / "both", root, "[0,1]")
    first = train_run(base / "first", root, "[0]")
    time.sleep(1.0)
    second = train_run(base / "second", root, "[1]")
    return {"both": both, "first": first, "second": second, "root": root}


def close(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-5, abs=1e-6)
    return a == b


def test_folds_of_two_runs_pool_as_one_run_of_both(runs: dict[str, Path], tmp_path: Path) -> None:
    report = pool_runs([runs["second"], runs["first"]], tmp_path / "pooled")
    written = json.loads((tmp_path / "pooled" / "metrics.json").read_text())
    reference = json.loads((runs["both"] / "metrics.json").read_text())
    assert [f["fold"] for f in written["folds"]] == [0, 1]  # by fold, whatever the order of the runs
    assert set(written["pooled"]) == set(reference["pooled"])
    for key, value in reference["pooled"].items():
        assert close(written["pooled"][key], value), key
    for got, expected in zip(written["folds"], reference["folds"], strict=True):
        assert set(got) == set(expected) and all(close(got[k], v) for k, v in expected.items()), expected["fold"]
    assert written["method"] == "weak" and written["warnings"] == reference["warnings"]
    assert [r["folds"] for r in written["runs"]] == [[1], [0]]
    command = written["runs"][0]["command"]
    assert command.startswith("python train.py experiment=demo") and "'folds=[1]'" in command
    assert "hydra.run.dir" not in command
    assert 0 < report["wall_s"] < 600
    uncached = train_run(tmp_path / "uncached", runs["root"], "[1]", "data.cache=none")  # the same pixels: pools
    assert pool_runs([runs["first"], uncached], tmp_path / "uncached_pool")["runs"][1]["folds"] == [1]
    assert (tmp_path / "pooled" / "metrics.md").is_file() and (tmp_path / "pooled" / "metrics.csv").is_file()


def test_pooling_refuses_other_settings_a_fold_twice_and_empty_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(SettingError, match=r"fold 0 is in more than one run"):
        pool_runs([runs["both"], runs["first"]], tmp_path / "twice")
    other = train_run(tmp_path / "other", runs["root"], "[1]", "seed=7")
    with pytest.raises(SettingError, match=r"differs from .* in \['data.seed', 'seed'\]"):
        pool_runs([runs["first"], other], tmp_path / "other_seed")
    (tmp_path / "stopped").mkdir()
    (tmp_path / "stopped" / "config_resolved.yaml").write_text((runs["first"] / "config_resolved.yaml").read_text())
    with pytest.raises(SettingError, match="no finished fold"):
        pool_runs([tmp_path / "stopped"], tmp_path / "none")
    with pytest.raises(SettingError, match="not a train.py run folder"):
        pool_runs([tmp_path], tmp_path / "none")


def test_the_command_line_writes_and_prints_the_table(runs: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    main([str(tmp_path / "out"), str(runs["first"]), str(runs["second"])])
    out = capsys.readouterr().out
    assert "| pooled |" in out and "2 fold(s) from 2 run(s)" in out
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["pooled"]["ap"] >= 0
