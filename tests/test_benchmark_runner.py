"""benchmarks/run.py refuses to record a result from a working tree with uncommitted changes; every result records
the same fields; the README's results table shows a result's nested numbers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from datamodules.synthetic import write_neu_det
from tests.conftest import PROJECT_ROOT
from tests.helpers import compose_cfg, load_benchmark
from workflow.errors import SettingError
from workflow.run_info import git_commit, require_clean_tree, write_result


def test_a_dirty_tree_is_refused_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = load_benchmark("run")
    monkeypatch.setattr("workflow.run_info.git_commit", lambda cwd=None: "0123abc-dirty")
    ran: list = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: ran.append(a))
    with pytest.raises(SystemExit, match="uncommitted changes.*--allow-dirty"):
        runner.main(["probe", "experiment=demo", "--selection", "fixed"])
    assert not ran


def test_the_runner_asks_how_the_settings_were_chosen_and_records_it(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """No default: a result's selection is a claim only the person running it can make; what is given is recorded."""
    runner = load_benchmark("run")
    monkeypatch.setattr("workflow.run_info.git_commit", lambda cwd=None: "0123abc")

    def fake_train(command: list[str], **_: object) -> None:
        run_dir = Path(next(a for a in command if a.startswith("hydra.run.dir=")).split("=", 1)[1])
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps({"pooled": {"acc": 0.5}, "folds": [],
                                                          "warnings": ["fold 1: the pseudo-labels never changed"]}))
        (run_dir / "config_resolved.yaml").write_text("model:\n  _target_: lightning_modules.cluster.ClusteringModule")

    monkeypatch.setattr(subprocess, "run", fake_train)
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    with pytest.raises(SystemExit):
        runner.main(["probe", "experiment=demo"])
    with pytest.raises(SystemExit):
        runner.main(["probe", "experiment=demo", "--selection", "tuned"])
    runner.main(["probe", "experiment=demo", "--selection", "validation"])
    record = json.loads((tmp_path / "benchmarks" / "results" / "probe.json").read_text())
    assert record["selection"] == "validation" and record["metrics"]["pooled"] == {"acc": 0.5}
    assert record["method"] == "cluster"
    assert record["metrics"]["warnings"] == ["fold 1: the pseudo-labels never changed"]  # what went wrong, kept


def write_earlier_run(runner: object, run_dir: Path, *overrides: str) -> Path:
    """A run folder's resolved config, as train.py writes it, for the config ``overrides`` compose."""
    run_dir.mkdir(parents=True)
    cfg = runner.planned_config(["experiment=demo", *overrides])
    (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg))
    return run_dir


def test_pool_with_records_the_folds_of_earlier_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--pool-with: the JSON holds the pooled report of the earlier runs and this one, the runs' commits and each
    run's folder, command and folds; the wall time is that of the pooled folds."""
    runner = load_benchmark("run")
    monkeypatch.setattr("workflow.run_info.git_commit", lambda cwd=None: "bbb")
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    write_earlier_run(runner, tmp_path / "outputs" / "earlier", "folds=[0]", "data.cache=none")  # RAM cache: same
    calls: list = []

    def fake_train(command: list[str], **_: object) -> None:
        run_dir = Path(next(a for a in command if a.startswith("hydra.run.dir=")).split("=", 1)[1])
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps({"pooled": {"ap": 0.4}, "folds": [{"fold": 1, "ap": 0.4}]}))
        (run_dir / "config_resolved.yaml").write_text("model:\n  _target_: lightning_modules.weak.WeakDetectionModule")

    def fake_pool(run_dirs: list[Path], out_dir: Path) -> dict:
        calls.append(run_dirs)
        out_dir.mkdir(parents=True)
        (out_dir / "metrics.json").write_text(json.dumps({"pooled": {"ap": 0.6}, "folds": [{"fold": 0}, {"fold": 1}],
                                                          "warnings": []}))
        runs = [{"run_dir": str(d), "commit": c, "folds": [f]} for d, c, f in zip(run_dirs, "ab", (0, 1), strict=True)]
        return {"wall_s": 123.0, "runs": runs}

    monkeypatch.setattr(subprocess, "run", fake_train)
    monkeypatch.setattr(runner, "pool_runs", fake_pool)
    runner.main(["probe", "experiment=demo", "folds=[1]", "--selection", "fixed", "--pool-with", "outputs/earlier"])
    record = json.loads((tmp_path / "benchmarks" / "results" / "probe.json").read_text())
    assert calls[0][0] == tmp_path / "outputs" / "earlier" and calls[0][1].parent == tmp_path / "outputs" / "benchmarks"
    assert record["metrics"]["pooled"] == {"ap": 0.6} and [f["fold"] for f in record["metrics"]["folds"]] == [0, 1]
    assert record["commit"] == "a+b" and record["wall_s"] == 123.0 and record["method"] == "weak"
    assert [r["folds"] for r in record["pooled_runs"]] == [[0], [1]]


def test_pool_with_a_run_of_another_setting_is_refused_before_training(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The setting is compared before the run, not after hours of training; the differing keys are named."""
    runner = load_benchmark("run")
    monkeypatch.setattr("workflow.run_info.git_commit", lambda cwd=None: "bbb")
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    write_earlier_run(runner, tmp_path / "earlier", "folds=[0]", "trainer.precision=bf16-mixed")
    ran: list = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: ran.append(a))
    with pytest.raises(SettingError, match=r"differs from this run in \['trainer.precision'\]"):
        runner.main(["probe", "experiment=demo", "folds=[1]", "trainer.precision=32-true", "--selection", "fixed",
                     "--pool-with", str(tmp_path / "earlier")])
    assert not ran


def test_from_run_records_a_finished_run_with_its_own_command_and_machine(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """--from-run: nothing trains; the command is the run's (from Hydra's overrides record), the device and packages
    its run_info.json's, the wall time its folds' (from the pooled report)."""
    runner = load_benchmark("run")
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    run_dir = tmp_path / "elsewhere" / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- experiment=demo\n- seed=2\n- hydra.run.dir=/x\n")
    (run_dir / "run_info.json").write_text(json.dumps({"device": "cpu the run's", "packages": {"torch": "0"}}))
    (run_dir / "metrics.json").write_text(json.dumps({"pooled": {"ap": 0.4}, "folds": [{"fold": 0}]}))
    (run_dir / "config_resolved.yaml").write_text("model:\n  _target_: lightning_modules.weak.WeakDetectionModule")

    def fake_pool(run_dirs: list[Path], out_dir: Path) -> dict:
        assert run_dirs == [run_dir]
        out_dir.mkdir(parents=True)
        (out_dir / "metrics.json").write_text(json.dumps({"pooled": {"ap": 0.4}, "folds": [{"fold": 0}]}))
        return {"wall_s": 77.0, "runs": [{"commit": "c0ffee"}]}

    monkeypatch.setattr(runner, "pool_runs", fake_pool)
    with pytest.raises(SystemExit):
        runner.main(["probe", "seed=3", "--selection", "fixed", "--from-run", str(run_dir)])
    runner.main(["probe", "--selection", "fixed", "--from-run", str(run_dir)])
    record = json.loads((tmp_path / "benchmarks" / "results" / "probe.json").read_text())
    assert not (tmp_path / "outputs").exists()  # nothing trained
    assert record["command"] == "python train.py experiment=demo seed=2"
    assert record["device"] == "cpu the run's" and record["packages"] == {"torch": "0"}
    assert record["wall_s"] == 77.0 and record["commit"] == "c0ffee" and record["run_dir"] == "elsewhere/run"
    assert "pooled_runs" not in record and record["metrics"]["pooled"] == {"ap": 0.4}


def test_a_clean_tree_passes_and_dirty_is_allowed_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workflow.run_info.git_commit", lambda cwd=None: "0123abc")
    assert require_clean_tree("x") == "0123abc"
    monkeypatch.setattr("workflow.run_info.git_commit", lambda cwd=None: "0123abc-dirty")
    assert require_clean_tree("x", allow_dirty=True) == "0123abc-dirty"


def test_the_results_table_flattens_nested_numbers_and_leaves_out_the_rest() -> None:
    flatten = load_benchmark("results_table").flatten
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
    write_result(tmp_path / "results", "probes/probe", "python x.py", "0123abc", 1.0, {})
    assert json.loads((tmp_path / "results" / "probes" / "probe.json").read_text())["name"] == "probe"


def gpu_script_calls(tmp_path: Path, *args: str) -> tuple[int, list[list[str]]]:
    """Run benchmarks/gpu_reproduction.sh with a stand-in ``python`` that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls.txt"
    fake = bin_dir / "python"
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\x1f" "$@" >> {log}\necho >> {log}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(PROJECT_ROOT / "benchmarks" / "gpu_reproduction.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=60)
    lines = log.read_text().splitlines() if log.exists() else []
    return done.returncode, [line.rstrip("\x1f").split("\x1f") for line in lines]


def test_the_gpu_script_runs_the_three_results_whose_overrides_compose(tmp_path: Path) -> None:
    rc, calls = gpu_script_calls(tmp_path, "/data")
    assert rc == 0
    assert [c[:2] for c in calls] == [["benchmarks/run.py", "cluster_neu_gpu"],
                                      ["benchmarks/run.py", "weak_kolektor_gpu"],
                                      ["benchmarks/kmeans_speed.py", "--archive"]]
    assert "data.archive=/data/NEU-DET.zip" in calls[0] and "data.archive=/data/KolektorSDD.zip" in calls[1]
    for call in calls[:2]:
        assert call[-2:] == ["--selection", "fixed"]
        cfg = compose_cfg(call[2:-2])
        assert cfg.trainer.accelerator == "gpu" and cfg.task_name == call[1].removesuffix("_gpu")
    rc, calls = gpu_script_calls(tmp_path / "one", "/data", "weak_kolektor")
    assert rc == 0 and [c[1] for c in calls] == ["weak_kolektor_gpu"]
    rc, _ = gpu_script_calls(tmp_path / "bad", "/data", "everything")
    assert rc == 2


def test_views_speed_times_both_views_with_the_presets_settings(tmp_path: Path) -> None:
    load_benchmark("views_speed").main(["--preset", "cluster_dagm_cpu", "--repeats", "1", "--allow-dirty",
                                        "--name", str(tmp_path / "views")])
    record = json.loads((tmp_path / "views.json").read_text())
    metrics = record["metrics"]
    assert metrics["views"]["global_size"] == 64 and metrics["batch_size"] == 32
    assert metrics["per_image_s"] > 0 and metrics["per_batch_s"] > 0
    assert metrics["speedup"] == metrics["per_image_s"] / metrics["per_batch_s"]
    assert record["commit"] and record["command"].startswith("python benchmarks/views_speed.py")
    assert (record["method"], record["selection"]) == ("cluster", "fixed")


def test_the_descriptor_baseline_gives_test_images_the_nearest_training_centre(tmp_path: Path) -> None:
    """descriptor_kmeans: centres found on the training points, each test point in its own blob's cluster; the
    whole script on a generated NEU-DET over the preset's 3 folds."""
    import numpy as np

    module = load_benchmark("descriptor_kmeans")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20)) * 5
    train = np.concatenate([c + rng.normal(size=(30, 20)) for c in centres]).astype(np.float32)
    test = np.concatenate([c + rng.normal(size=(10, 20)) for c in centres]).astype(np.float32)
    train_clusters, test_clusters = module.fit_and_assign(train, test, 3, pca_dim=4, nredo=2, seed=0)
    assert len(set(train_clusters.tolist())) == 3
    for blob in range(3):
        own = train_clusters[blob * 30 : (blob + 1) * 30]
        assert (own == own[0]).all() and (test_clusters[blob * 10 : (blob + 1) * 10] == own[0]).all()

    root = write_neu_det(tmp_path / "NEU-DET", per_class=6, size=(32, 32), seed=1)
    module.main(["--root", str(root), "--allow-dirty", "--name", str(tmp_path / "baseline")])
    record = json.loads((tmp_path / "baseline.json").read_text())
    folds, pooled = record["metrics"]["folds"], record["metrics"]["pooled"]
    assert [f["fold"] for f in folds] == [0, 1, 2] and sum(f["n_images"] for f in folds) == pooled["n_images"] == 36
    assert all(0 <= f["acc"] <= 1 and 0 <= f["train_acc"] <= 1 for f in folds)
    assert record["descriptor"] == "lbp_moments" and record["command"].startswith("python benchmarks/descriptor_k")
    assert (record["method"], record["selection"]) == ("cluster", "test")


def test_outside_a_git_checkout_the_commit_comes_from_source_commit(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv("SOURCE_COMMIT", raising=False)
    assert git_commit(tmp_path) == "unknown"
    monkeypatch.setenv("SOURCE_COMMIT", "0f0a3f6")
    assert git_commit(tmp_path) == "0f0a3f6"
    assert git_commit(PROJECT_ROOT) != "0f0a3f6"  # a checkout names its own commit


def test_a_run_result_names_its_method_and_the_table_shows_that_methods_metrics(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The method comes from the registry (the run's model._target_), and the results table takes the method's
    metric names from the registry, headline first, not a guess from which metrics are present."""
    (tmp_path / "config_resolved.yaml").write_text("model:\n  _target_: lightning_modules.cluster.ClusteringModule\n")
    assert load_benchmark("run").run_method(tmp_path) == "cluster"
    figures = load_benchmark("results_table").figures
    folds = [{"fold": 0, "ap": 0.5, "acc": 0.25, "false_calls": 3}]
    weak = figures("weak", {"pooled": {"acc": 0.25, "ap": 0.5, "false_calls": 3}, "folds": folds})
    cluster = figures("cluster", {"pooled": {"ap": 0.5, "acc": 0.25}, "folds": folds})
    assert weak == ("ap 0.5000, false_calls 3", "ap 0.5000; false_calls 3")
    assert cluster == ("acc 0.2500", "acc 0.2500")
