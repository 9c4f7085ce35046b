"""W&B: the quick online/offline decision, one run per job with group/name/config, and the bar: an offline run
folder from ``python train.py experiment=demo debug=fast logger=wandb`` holding metrics and heat-map panels."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import pytest
from omegaconf import OmegaConf

from callbacks import ClusteringPlots, PseudoLabelReassigner
from tests.conftest import PROJECT_ROOT
from tests.helpers import wait_for_wandb_records, wandb_records
from workflow import wandb_mode
from workflow.loggers import build_loggers, finish, set_fold
from workflow.wandb_mode import decide_wandb_mode, find_api_key


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """os.environ without any W&B setting or key, with HOME and wandb's folders under ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    env.update(HOME=str(home), WANDB_CONFIG_DIR=str(home / "wandb-config"), WANDB_CACHE_DIR=str(home / "wandb-cache"),
               WANDB_DATA_DIR=str(home / "wandb-data"), MPLCONFIGDIR=matplotlib.get_configdir(), **extra)
    return env


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback port that accepts connections in the kernel but never answers a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.fixture
def answering_server() -> Iterator[str]:
    """A loopback HTTP server that answers every connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(5)

    def serve() -> None:
        try:
            connection, _ = server.accept()
            with connection:
                connection.recv(1024)
                connection.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()


# -- the decision -----------------------------------------------------------------------------------------
def test_wandb_mode_in_the_environment_is_respected_without_looking_further(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(wandb_mode, "probe", lambda *a, **k: pytest.fail("probed"))
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": "x" * 40}
    assert decide_wandb_mode({**env, "WANDB_MODE": "disabled"}, cache=False).mode == "disabled"
    assert decide_wandb_mode({**env, "WANDB_MODE": "online"}, cache=False).mode == "online"
    assert decide_wandb_mode({**env, "WANDB_OFFLINE": "true"}, cache=False).mode == "offline"


def test_no_api_key_is_offline_at_once_without_a_probe(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(wandb_mode, "probe", lambda *a, **k: pytest.fail("probed"))
    decision = decide_wandb_mode({"HOME": str(tmp_path)}, cache=False)
    assert decision.offline and "no W&B API key" in decision.reason


def test_api_key_sources_environment_netrc_and_settings(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert find_api_key(env) is None
    assert find_api_key({**env, "WANDB_API_KEY": "k"}) == "WANDB_API_KEY"
    (tmp_path / ".netrc").write_text("machine example.com login user password other\n")
    assert find_api_key(env) is None  # an entry for another host
    (tmp_path / ".netrc").write_text("machine api.wandb.ai login user password secret\n")
    assert find_api_key(env) == "netrc entry for api.wandb.ai"
    (tmp_path / ".netrc").unlink()
    settings = tmp_path / ".config" / "wandb" / "settings"
    settings.parent.mkdir(parents=True)
    settings.write_text("[default]\nbase_url = http://127.0.0.1:9\n")
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login user password secret\n")
    assert find_api_key(env) == "netrc entry for 127.0.0.1"  # the host of base_url in the settings file


def test_a_server_that_never_answers_gives_offline_within_3_s(silent_server: str, tmp_path: Path) -> None:
    for url in (f"http://{silent_server}", f"https://{silent_server}"):
        env = {"HOME": str(tmp_path), "WANDB_API_KEY": "k", "WANDB_BASE_URL": url}
        start = time.perf_counter()
        decision = decide_wandb_mode(env, timeout=1.0, cache=False)
        assert time.perf_counter() - start < 3.0
        assert decision.mode == "offline" and "did not answer" in decision.reason


def test_an_unroutable_server_gives_offline_within_3_s(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": "k", "WANDB_BASE_URL": "https://192.0.2.1"}  # TEST-NET-1
    start = time.perf_counter()
    assert decide_wandb_mode(env, timeout=1.0, cache=False).mode == "offline"
    assert time.perf_counter() - start < 3.0


def test_a_server_that_answers_gives_online(answering_server: str, tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": "k", "WANDB_BASE_URL": f"http://{answering_server}"}
    assert decide_wandb_mode(env, timeout=2.0, cache=False).mode == "online"


# -- runs, in process (offline) ---------------------------------------------------------------------------
def wandb_cfg(save_dir: Path):
    return OmegaConf.create({
        "task_name": "unit", "tags": ["a", "b"], "model": {"num_clusters": 3},
        "logger": {"wandb": {"_target_": "lightning.pytorch.loggers.WandbLogger", "project": "defect-lab",
                             "group": None, "name": None, "tags": "${tags}", "save_dir": str(save_dir),
                             "mode": None, "log_model": False}},
    })


def test_each_job_gets_its_own_offline_run_with_clustering_pictures(monkeypatch, tmp_path: Path) -> None:
    for key in [k for k in os.environ if k.startswith("WANDB_") or k == "NETRC"]:
        monkeypatch.delenv(key)
    for key, value in isolated_env(tmp_path / "home").items():
        monkeypatch.setenv(key, value)
    run_dirs = []
    for job in range(2):  # two jobs of a multirun, one after the other in the same process
        loggers = build_loggers(wandb_cfg(tmp_path / f"job{job}"))
        set_fold(loggers, 0)
        kmeans = PseudoLabelReassigner(num_clusters=3)
        kmeans.history = [{"step": 0, "sizes": [2, 7, 3], "seconds": 0.1}]
        trainer = SimpleNamespace(loggers=loggers, is_global_zero=True, global_step=4, default_root_dir=str(tmp_path),
                                  callbacks=[kmeans], datamodule=None)
        plots = ClusteringPlots()
        plots.on_train_end(trainer, None)
        result = {"metrics": {"confusion": [[2, 0], [1, 3]], "mapping": {0: 0, 1: 1}},
                  "per_image": {"cluster": [0, 0, 1, 1, 1, 1], "target": [0, 0, 1, 1, 1, 0]}}
        plots.on_test_end(trainer, SimpleNamespace(fold_result=result))
        assert loggers[0].experiment.group == "unit" and list(loggers[0].experiment.tags) == ["a", "b"]
        run_dirs += finish(loggers)
    assert len(run_dirs) == 2 and run_dirs[0] != run_dirs[1]
    for run_dir in run_dirs:
        images = sorted(p.name for p in (run_dir / "files" / "media" / "images").rglob("*.png"))
        assert any(n.startswith("size_history") for n in images) and any(n.startswith("confusion") for n in images)
        keys = (b"fold0-test/confusion_chart", b"num_clusters")  # a chart, the config
        record = wait_for_wandb_records(next(run_dir.glob("run-*.wandb")), keys)
        assert all(key in record for key in keys), [key for key in keys if key not in record]


# -- the bar: train.py end to end, offline ----------------------------------------------------------------
def test_train_with_wandb_and_no_key_runs_offline_with_metrics_and_heatmap_panels(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [
        "experiment=demo", "debug=fast", "logger=wandb", f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={run_dir}", "data.num_generated_folders=6", "+data.generated_size=[128,64]",
        "trainer.log_every_n_steps=1", "callbacks.heatmap_panels.every_n_steps=4", "callbacks.model_checkpoint=null",
        "trainer.enable_model_summary=false", "print_config=false",
    ]
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "train.py", *overrides], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         env=isolated_env(tmp_path / "home"), timeout=600)
    wall = time.perf_counter() - start
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "W&B mode offline (no W&B API key" in text  # decided at once, no probe, no network wait
    assert wall < 300, wall
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert f"upload it with: wandb sync {runs[0]}" in text
    record = wandb_records(next(runs[0].glob("run-*.wandb")))
    for key in (b"fold0-train/loss", b"fold0-train/localization/loss", b"fold0-test/ap", b"fold0-heatmaps_live",
                b"lnet_wide", b"debug-run"):  # metrics, per-stage loss, panels, the resolved config, the run name
        assert key in record, key
    panels = list((runs[0] / "files" / "media" / "images").glob("fold0-heatmaps_live_*.png"))
    assert len(panels) == 2 * 4  # steps 4 and 8 (the end), 4 fixed test images each
    assert list((runs[0] / "files" / "media" / "images").rglob("pr_curve_plot_*.png"))
