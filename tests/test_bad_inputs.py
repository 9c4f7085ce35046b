"""Bad input and faults (issue 29): each gets an exit status and a message naming the setting or file, and
leaves nothing half-written. In-process where the exit status is that of :func:`train.main` (Hydra's
``cfg_passthrough``); subprocesses only where signals or two concurrent processes matter, on tiny generated data."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

import predict
import train
from datamodules import DatasetError, KolektorSDDDataModule
from datamodules.checks import check_data_args
from datamodules.dagm import read_dagm_labels
from datamodules.folder import list_folder_samples
from datamodules.header_check import header_size
from datamodules.sampling import BalancedBatchSampler
from datamodules.splits import ksdd_split_from_pickle, load_split_pickle
from datamodules.synthetic import write_dagm, write_folder, write_kolektor_like, write_neu_cls
from tests.conftest import PROJECT_ROOT
from tests.helpers import compose_cfg, load_benchmark
from tests.inference_helpers import cluster_checkpoint
from tests.test_kolektor_datamodule import make_dm
from workflow.errors import SettingError
from workflow.failure import FULL_ERROR_HINT, SIGTERM_EXIT, interruption_message, resume_command
from workflow.progress import MAX_SILENCE_S, TEST_LINE_GAP_S, ProgressLog, duration, eta_line
from workflow.quiet import NoiseFilter, quiet_third_party
from workflow.report import write_report
from workflow.run_checks import fold_guards
from workflow.run_dir import run_id

FAST = ["logger=none", "print_config=false", "callbacks=none", "trainer.enable_model_summary=false"]
CLUSTER_PRESETS = sorted(p.stem for p in (PROJECT_ROOT / "conf" / "experiment").glob("cluster_*.yaml"))


# -- helpers --------------------------------------------------------------------------------------------
def config(out_dir: Path, *overrides: str) -> DictConfig:
    cfg = compose_cfg([*FAST, *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
    return cfg


def fail_run(out_dir: Path, capsys: pytest.CaptureFixture, *overrides: str) -> tuple[str, dict]:
    """Run :func:`train.main` in-process, expecting the clean failure: exit status 1, the message alone on
    stderr with the HYDRA_FULL_ERROR hint; (stderr, run_info.json) returned."""
    cfg = config(out_dir, *overrides)
    with pytest.raises(SystemExit) as exit_info:
        train.main(cfg)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert FULL_ERROR_HINT in err and "Traceback" not in err
    info = json.loads((out_dir / "run_info.json").read_text())
    assert info["status"] == "failed" and info["error"]["message"] in err
    assert not (out_dir / "metrics.json").exists() and not list(out_dir.glob("fold*/predictions.csv"))
    return err, info


@pytest.fixture
def demo_data(tmp_path: Path) -> Path:
    return write_kolektor_like(tmp_path / "ksdd", num_folders=6, parts_per_folder=2, size=(64, 32), seed=3)


@pytest.fixture(scope="module")
def neu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_neu_cls(tmp_path_factory.mktemp("neu") / "NEU-CLS", per_class=4, size=(64, 64))


# -- case 1: unique run folders ---------------------------------------------------------------------------
def test_run_folder_name_holds_a_per_process_id() -> None:
    cfg = compose_cfg(["experiment=demo"])
    run_dir, sweep_dir = str(cfg.hydra.run.dir), str(cfg.hydra.sweep.dir)
    assert run_dir.endswith(f"_{run_id()}") and sweep_dir.endswith(f"_{run_id()}")
    assert str(cfg.hydra.run.dir) == run_dir  # stable within the process
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.num}"  # sweeps keep one subfolder per job


def test_two_runs_started_together_get_two_folders(tmp_path: Path) -> None:
    """Two ``train.py`` processes started in the same instant: two run folders, each with its own run_info."""
    command = [sys.executable, "train.py", "experiment=demo", *FAST, f"paths.log_dir={tmp_path}",
               "data.num_defective=-1"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [1, 1], outs[0][1][-2000:]
    runs = sorted((tmp_path / "demo" / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        assert json.loads((run / "run_info.json").read_text())["status"] == "failed"


# -- case 3: SIGTERM mid-training -------------------------------------------------------------------------
class SigtermAtStep(L.Callback):
    """Test-only: send this process SIGTERM at the end of global step ``step`` (as ``kill -TERM`` would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_saves_last_ckpt_prints_the_resume_command_and_exits_143(tmp_path: Path) -> None:
    data = write_kolektor_like(tmp_path / "ksdd", num_folders=6, parts_per_folder=2, size=(64, 32), seed=3)
    base = ["experiment=demo", "debug=fast", "logger=none", "print_config=false", f"data.root={data}",
            "model.heatmap_dir=null", "trainer.enable_model_summary=false", "progress_every=2"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    out = subprocess.run([sys.executable, "train.py", *base, f"hydra.run.dir={killed}",
                          f"+callbacks.term._target_={__name__}.SigtermAtStep", "+callbacks.term.step=4"],
                         cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == SIGTERM_EXIT, out.stderr[-3000:]
    ckpt = killed / "fold0" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and not (killed / "metrics.json").exists()
    import torch
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 4
    info = json.loads((killed / "run_info.json").read_text())
    assert info["status"] == "interrupted" and info["step"] == 4
    assert "Resume with:" in out.stderr and f"ckpt_path={ckpt}" in out.stderr and "folds=[0]" in info["resume"]
    logged = out.stdout + out.stderr
    assert "fold 0: training 8 steps" in logged and "step 4/8 (50%), stage decision" in logged
    # the printed command (without the test's own SIGTERM callback) resumes and ends the run
    resume = [a for a in info["resume"].split()[2:] if not a.startswith("+callbacks.term")]
    resumed = tmp_path / "resumed"
    out = subprocess.run([sys.executable, "train.py", *resume, f"hydra.run.dir={resumed}"], cwd=PROJECT_ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming at step 4" in out.stdout + out.stderr
    assert json.loads((resumed / "run_info.json").read_text())["status"] == "success"
    # the same weights, bit for bit, as a run never interrupted
    reference = tmp_path / "reference"
    out = subprocess.run([sys.executable, "train.py", *base, f"hydra.run.dir={reference}"], cwd=PROJECT_ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    final, expected = (torch.load(run / "fold0" / "checkpoints" / "last.ckpt", map_location="cpu",
                                  weights_only=False) for run in (resumed, reference))
    assert final["global_step"] == expected["global_step"] == 8
    assert all(torch.equal(final["state_dict"][k], v) for k, v in expected["state_dict"].items())


def test_resume_command_replaces_folds_and_ckpt_path() -> None:
    command = resume_command(["experiment=demo", "folds=[0,1,2]", "ckpt_path=old.ckpt", "seed=3"], 1,
                             Path("/r/fold1/checkpoints/last.ckpt"))
    assert command == "python train.py experiment=demo seed=3 folds=[1] ckpt_path=/r/fold1/checkpoints/last.ckpt"
    message = interruption_message(1, 40, command, [2])
    assert message.splitlines() == ["Interrupted by SIGTERM (fold 1, step 40). Resume with:", f"  {command}",
                                    "then the folds that did not start: folds=[2] (no ckpt_path)"]
    assert fold_guards(compose_cfg(["folds=[0,1,2]"]), 1)[0].later_folds == [2]


# -- settings named in the message (cases 6, 7, 12, 13, 14) and data roots (15, 8) ---------------------------
@pytest.mark.parametrize(("overrides", "message"), [
    (["data.num_defective=-1"], r"data\.num_defective=-1 must be >= 0"),
    (["data.num_folds=1"], r"data\.num_folds=1: cross-validation needs at least 2 folds"),
    (["data.num_folds=0"], r"data\.num_folds=0: cross-validation needs at least 2 folds"),
    (["folds=[]"], r"folds=\[\] lists no fold"),
    (["folds=[0,3]"], r"folds=\[0, 3\]: \[3\] outside 0\.\.2"),
    (["data.image_size=[0,0]"], r"data\.image_size=\[0, 0\] must be two positive sizes"),
    (["progress_every=-5"], r"progress_every=-5 must be >= 0"),
], ids=["num_defective", "num_folds_1", "num_folds_0", "folds_empty", "fold_outside", "image_size", "progress"])
def test_bad_setting_fails_with_its_name(tmp_path: Path, capsys, demo_data: Path, overrides, message) -> None:
    err, info = fail_run(tmp_path / "run", capsys, "experiment=demo", f"data.root={demo_data}", *overrides)
    assert info["error"]["type"] == "SettingError"
    assert __import__("re").search(message, err)


def test_one_cluster_is_refused(tmp_path: Path, capsys, neu_root: Path) -> None:
    err, _ = fail_run(tmp_path / "run", capsys, "experiment=cluster_neu_cpu", "debug=fast", f"data.root={neu_root}",
                      "data.archive=null", "model.num_clusters=1")
    assert "model.num_clusters=1: clustering needs at least 2 clusters" in err


def test_empty_root_names_the_root(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    err, info = fail_run(tmp_path / "run", capsys, "data=kolektor", f"data.root={tmp_path / 'empty'}",
                         f"data.archive={tmp_path / 'KolektorSDD.zip'}")
    assert f"data.root={tmp_path / 'empty'} is an empty folder" in err and info["error"]["type"] == "DatasetError"


def test_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match=rf"data\.root={tmp_path / 'file'} is a file, not a folder"):
        KolektorSDDDataModule(root=tmp_path / "file")


def zipped(tmp_path: Path) -> Path:
    source = write_kolektor_like(tmp_path / "src" / "KolektorSDD", num_folders=6, parts_per_folder=2,
                                 size=(64, 32), seed=3)
    archive = tmp_path / "KolektorSDD.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(source.rglob("*")):
            zf.write(path, path.relative_to(source.parent).as_posix())
    return archive


def test_wrong_sha256_of_a_local_archive_is_refused_before_and_after_extraction(tmp_path: Path) -> None:
    from datamodules.archive import sha256_of

    archive, root = zipped(tmp_path), tmp_path / "root"
    with pytest.raises(DatasetError, match=rf"checksum mismatch for data\.archive={archive}: data\.sha256 is 00"):
        make_dm(root, archive=archive, sha256="00" * 32)
    assert not root.exists()  # nothing extracted
    dm = make_dm(root, archive=archive, sha256=sha256_of(archive))
    dm.prepare_data()
    assert (root / ".extracted").is_file()
    with pytest.raises(DatasetError, match="checksum mismatch"):
        make_dm(root, archive=archive, sha256="ab" * 32)  # checked against the checksum recorded at extraction


# -- data files named in the message (the classes that already worked, and cases 9, 16) ------------------------
def test_missing_root_says_where_to_get_the_dataset(tmp_path: Path) -> None:
    dm = KolektorSDDDataModule(root=tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"nowhere.*vicos\.si"):
        dm.prepare_data()
    with pytest.raises(DatasetError, match="nowhere"):
        dm.setup()


def test_image_without_mask(fresh_kolektor: Path) -> None:
    (fresh_kolektor / "kos02" / "Part1_label.bmp").unlink()
    with pytest.raises(DatasetError, match=r"kos02/Part1\.jpg has no mask"):
        make_dm(fresh_kolektor).setup()


def test_mask_of_another_size(fresh_kolektor: Path) -> None:
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(fresh_kolektor / "kos03" / "Part2_label.bmp")
    with pytest.raises(DatasetError, match=r"kos03/Part2_label\.bmp is 10x10"):
        make_dm(fresh_kolektor).setup()


def test_unreadable_image(fresh_kolektor: Path) -> None:
    (fresh_kolektor / "kos04" / "Part0.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"cannot read image .*kos04/Part0\.jpg"):
        make_dm(fresh_kolektor).setup()


def test_an_image_cut_short_is_refused_before_training(fresh_kolektor: Path) -> None:
    """A JPEG without its end (an interrupted copy; its header still reads) is found by the check before training,
    not by the loader after it."""
    path = fresh_kolektor / "kos05" / "Part1.jpg"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DatasetError, match=r"cannot read image .*kos05/Part1\.jpg: image file is truncated"):
        make_dm(fresh_kolektor).setup()


def test_whole_files_pass_the_check_and_cut_ones_do_not(tmp_path: Path) -> None:
    """Whole PNG and JPEG files pass, also a JPEG with bytes after its end marker (some writers pad); a PNG or a
    JPEG cut short is a DatasetError naming it."""
    pixels = np.random.default_rng(0).integers(0, 256, (40, 30), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels).save(tmp_path / "b.jpg")
    (tmp_path / "c.jpg").write_bytes((tmp_path / "b.jpg").read_bytes() + b"\x00" * 100)
    assert [header_size(tmp_path / n, "image") for n in ("a.png", "b.jpg", "c.jpg")] == [(30, 40)] * 3
    for name in ("a.png", "b.jpg"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[: len(data) // 2])
        with pytest.raises(DatasetError, match=rf"cannot read mask .*cut_{name}"):
            header_size(tmp_path / f"cut_{name}", "mask")


def test_num_defective_larger_than_available(fresh_kolektor: Path) -> None:
    with pytest.raises(DatasetError, match=r"num_defective=99 but fold 0 has only \d+"):
        make_dm(fresh_kolektor, num_defective=99).setup()


@pytest.mark.parametrize("fold", [-1, 3])
def test_fold_out_of_range(fresh_kolektor: Path, fold: int) -> None:
    with pytest.raises(DatasetError, match=rf"fold {fold} is out of range"):
        make_dm(fresh_kolektor, fold=fold)


def test_folder_without_kolektor_layout(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("not a dataset")
    with pytest.raises(DatasetError, match="no kosNN folders"):
        make_dm(tmp_path / "other").setup()


def test_dataset_error_through_train_is_one_clean_line(tmp_path: Path, capsys, demo_data: Path) -> None:
    (demo_data / "kos02" / "Part1_label.bmp").unlink()
    err, info = fail_run(tmp_path / "run", capsys, "experiment=demo", f"data.root={demo_data}")
    assert "kos02/Part1.jpg has no mask" in err and info["error"]["type"] == "DatasetError"
    assert len([line for line in err.splitlines() if line.strip()]) == 2  # the message and the hint


def test_split_pickle_refuses_globals(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pyb"
    evil.write_bytes(pickle.dumps(Path("x")))
    with pytest.raises(DatasetError, match="refusing to load global"):
        load_split_pickle(evil)


def test_split_pickle_of_plain_lists_loads(tmp_path: Path) -> None:
    path = tmp_path / "split_1_1.pyb"
    path.write_bytes(pickle.dumps(([[("kos01", True)]] * 3, [["kos02"], ["kos03"], ["kos04"]])))
    train_groups, test_groups = ksdd_split_from_pickle(path)
    assert train_groups == [["kos01"]] * 3 and test_groups == [["kos02"], ["kos03"], ["kos04"]]


def test_empty_dagm_labels_file_is_named(tmp_path: Path) -> None:
    root = write_dagm(tmp_path / "DAGM", textures=(1,), n_per_split=3)
    labels = root / "Class1" / "Train" / "Label" / "Labels.txt"
    labels.write_text("")
    with pytest.raises(DatasetError, match=rf"{labels} lists no image"):
        read_dagm_labels(labels)


def test_masks_of_no_image_are_warned_with_a_count_and_names(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", masks_root=tmp_path / "data" / "masks")
    mask = np.zeros((32, 32), dtype=np.uint8)
    (root / "masks" / "dent").mkdir()
    Image.fromarray(mask).save(root / "masks" / "dent" / "000.png")
    Image.fromarray(mask).save(root / "masks" / "scratch" / "999.png")
    with pytest.warns(UserWarning, match=r"2 mask file\(s\) .* match no image .*: dent/000\.png, scratch/999\.png"):
        samples = list_folder_samples(root)
    assert sum(s.mask is not None for s in samples) == 3


def test_check_data_args_accepts_valid_arguments(tmp_path: Path) -> None:
    check_data_args(tmp_path / "absent", num_folds=2, num_defective=0, image_size=(8, 8))


# -- case 5 and 11: clustering runs ---------------------------------------------------------------------
@pytest.mark.parametrize("preset", CLUSTER_PRESETS)
def test_debug_fast_composes_and_builds_every_clustering_preset(preset: str, tmp_path: Path) -> None:
    cfg = config(tmp_path, f"experiment={preset}", "debug=fast", "model.backbone.name=resnet18")
    assert cfg.model.max_steps == 4 and "max_clean_pictures" not in cfg.model
    with open_dict(cfg):  # counts a preset leaves to the data (workflow.class_counts): no data here
        cfg.model.num_clusters = cfg.model.num_clusters or 3
    instantiate(cfg.model, optimizer=instantiate(cfg.optimizer), _convert_="all")
    instantiate(cfg.data, fold=0)


@pytest.mark.slow  # about 75 s on a loaded 2-core CPU; the zero-batch test below runs the same preset's fit quickly
def test_debug_fast_runs_a_clustering_preset(tmp_path: Path, neu_root: Path) -> None:
    out = tmp_path / "run"
    report = train.main(config(out, "experiment=cluster_neu_cpu", "debug=fast", f"data.root={neu_root}",
                               "data.archive=null", "model.backbone.name=resnet18", "callbacks=clustering"))
    assert report is not None
    assert json.loads((out / "run_info.json").read_text())["status"] == "success"
    assert (out / "metrics.json").is_file()


def test_clustering_run_without_a_training_batch_fails(tmp_path: Path, capsys, neu_root: Path) -> None:
    err, _ = fail_run(tmp_path / "run", capsys, "experiment=cluster_neu_cpu", "debug=fast", f"data.root={neu_root}",
                      "data.archive=null", "model.backbone.name=resnet18", "model.training_plan.batch_size=64")
    assert "no training batch: 16 training images give 0 complete batches" in err
    assert "model.training_plan.batch_size" in err


# -- case 18: predict.py on_error -----------------------------------------------------------------------
def predict_config(tmp_path: Path, *overrides: str) -> DictConfig:
    ckpt = cluster_checkpoint(tmp_path / "model.ckpt")
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "c.png"):
        Image.fromarray(np.full((32, 32), 90, dtype=np.uint8)).save(images / name)
    (images / "b.png").write_bytes(b"\x89PNG broken")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose("predict", overrides=[f"ckpt_path={ckpt}", f"input={images}",
                                             f"output_dir={tmp_path / 'out'}", "device=cpu", *overrides])


def test_predict_aborts_naming_the_unreadable_image(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        predict.main(predict_config(tmp_path))
    assert exit_info.value.code == 1
    assert f"cannot read image {tmp_path / 'images' / 'b.png'}" in capsys.readouterr().err
    assert not (tmp_path / "out" / "predictions.csv").exists()
    assert json.loads((tmp_path / "out" / "run_info.json").read_text())["status"] == "failed"


def test_predict_skips_unreadable_images_and_lists_them(tmp_path: Path) -> None:
    predict.main(predict_config(tmp_path, "on_error=skip"))
    rows = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["a.png", "c.png"]
    info = json.loads((tmp_path / "out" / "predict_info.json").read_text())
    assert [s["name"] for s in info["skipped"]] == ["b.png"] and info["n_images"] == 2


# -- cases 10 and 19: benchmarks/eval_scale.py -------------------------------------------------------------
@pytest.fixture
def eval_scale_run(tmp_path: Path):
    def make(target: str) -> Path:
        run = tmp_path / "run"
        run.mkdir(exist_ok=True)
        OmegaConf.save(OmegaConf.create({"model": {"_target_": target}}), run / "config_resolved.yaml")
        return run
    return make


@pytest.mark.parametrize(("name", "scales", "target", "message"), [
    ("../../evil", [1.0], "lightning_modules.cluster.ClusteringModule", "give a plain file name"),
    ("ok_name", [0.0], "lightning_modules.cluster.ClusteringModule", r"--scales \[0\.0\]"),
    ("ok_name", [1.0], "lightning_modules.weak.WeakDetectionModule", "re-tests clustering runs only"),
], ids=["name_traversal", "scale_zero", "weak_run"])
def test_eval_scale_refuses_before_writing(eval_scale_run, tmp_path: Path, name, scales, target, message) -> None:
    check_args = load_benchmark("eval_scale").check_args
    before = sorted(p.name for p in PROJECT_ROOT.iterdir())
    with pytest.raises(SystemExit, match=message):
        check_args(eval_scale_run(target), scales, name, overwrite=False)
    assert sorted(p.name for p in PROJECT_ROOT.iterdir()) == before  # no heatmaps/ in the project root


def test_eval_scale_never_overwrites_a_result_silently(eval_scale_run) -> None:
    eval_scale = load_benchmark("eval_scale")
    existing = sorted(eval_scale.RESULTS.glob("*.json"))[0].stem
    run = eval_scale_run("lightning_modules.cluster.ClusteringModule")
    with pytest.raises(SystemExit, match="exists: choose another --name, or pass --overwrite"):
        eval_scale.check_args(run, [1.0], existing, overwrite=False)
    eval_scale.check_args(run, [1.0], existing, overwrite=True)


# -- case 20: console noise, metrics.md of one fold; progress lines ----------------------------------------
def test_third_party_noise_is_filtered() -> None:
    quiet_third_party()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_third_party()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("Total length of `DataLoader` across ranks is zero. Please ...", UserWarning, stacklevel=1)
        warnings.warn("a warning of our own", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning of our own"]
    noise = NoiseFilter()
    record = logging.LogRecord("x", logging.INFO, "", 0, "💡 Tip: For seamless cloud uploads ...", None, None)
    assert not noise.filter(record)
    assert noise.filter(logging.LogRecord("x", logging.INFO, "", 0, "fold 0: training 8 steps", None, None))


def test_one_fold_metrics_md_shows_its_table_once(tmp_path: Path) -> None:
    table = write_report(tmp_path, [{"fold": 0, "metrics": {"ap": 0.5}}], {"ap": 0.5}, ["ap"])
    assert table.count("0.5000") == 1 and "0 (= pooled)" in table
    table = write_report(tmp_path, [{"fold": 0, "metrics": {"ap": 0.5}}, {"fold": 1, "metrics": {"ap": 0.7}}],
                         {"ap": 0.6}, ["ap"])
    assert "| pooled | 0.6000 |" in table


def test_pooled_row_shows_metrics_averaged_over_folds(tmp_path: Path) -> None:
    folds = [{"fold": k, "metrics": {"ap": 0.5, "pixel_ap": v}} for k, v in ((0, 0.2), (1, 0.4))]
    table = write_report(tmp_path, folds, {"ap": 0.6, "pixel_ap_mean_over_folds": 0.3}, ["ap", "pixel_ap"])
    assert "| pooled | 0.6000 | 0.3000 |" in table


def test_progress_line_has_step_stage_elapsed_and_eta() -> None:
    progress = ProgressLog(every_n_steps=10, fold=1)
    progress.total, progress.start_step = 100, 0
    progress.start_time = 0.0  # monotonic 0: elapsed is the clock itself; only the format is checked here
    line = progress.line(50, "decision")
    assert line.startswith("step 50/100 (50%), stage decision, ") and "elapsed, ETA " in line
    assert duration(3725) == "1h02m" and duration(192) == "3m12s" and duration(45) == "45s"
    with pytest.raises(ValueError, match="progress_every"):
        ProgressLog(every_n_steps=-1)


def test_a_slow_fold_gets_a_progress_line_after_two_minutes_without_one(caplog: pytest.LogCaptureFixture) -> None:
    progress = ProgressLog(every_n_steps=100, fold=0)
    trainer = SimpleNamespace(global_step=7, max_steps=1000, is_global_zero=True)
    progress.every, progress.start_time = 100, time.monotonic()
    progress.last_line = progress.start_time
    with caplog.at_level(logging.INFO, logger="workflow.progress"):
        progress.on_train_batch_end(trainer, object(), None, None, 6)  # step 7 of every 100, just after a line
        assert not caplog.records
        progress.last_line -= MAX_SILENCE_S
        progress.on_train_batch_end(trainer, object(), None, None, 6)
    assert [r.getMessage() for r in caplog.records][0].startswith("fold 0: step 7/1000 (0%)")


def test_the_test_phase_prints_its_batch_count_and_an_eta(caplog: pytest.LogCaptureFixture) -> None:
    """A CPU test phase of a few hundred images takes minutes: its batch count at the start, then up to ten lines
    with an ETA (20 batches: every 2nd) at least 10 s apart, and the last batch; a test phase of seconds gets its
    first and last line only."""
    progress = ProgressLog(fold=2)  # no training hook ran: a test of a finished fit (train=false, resumed)
    trainer = SimpleNamespace(num_test_batches=[20], is_global_zero=True)
    with caplog.at_level(logging.INFO, logger="workflow.progress"):
        progress.on_test_start(trainer, object())
        for batch in range(20):
            progress.last_line -= TEST_LINE_GAP_S  # a slow batch: 10 s since the last line
            progress.on_test_batch_end(trainer, object(), None, None, batch)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "fold 2: testing 20 batches" and len(lines) == 11
    assert lines[1].startswith("fold 2: testing batch 2/20 (10%), ") and "elapsed, ETA " in lines[1]
    assert lines[-1].startswith("fold 2: testing batch 20/20 (100%), ")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="workflow.progress"):
        progress.on_test_start(trainer, object())
        for batch in range(20):
            progress.on_test_batch_end(trainer, object(), None, None, batch)
    assert [r.getMessage()[:34] for r in caplog.records] == ["fold 2: testing 20 batches",
                                                             "fold 2: testing batch 20/20 (100%)"]
    assert eta_line(5, 0, 3.0, "testing batch") == "testing batch 5/0, 3s elapsed"  # length unknown: no ETA
    caplog.clear()
    quiet = ProgressLog(every_n_steps=0, fold=2)  # progress_every=0: the start lines only
    with caplog.at_level(logging.INFO, logger="workflow.progress"):
        quiet.on_test_start(trainer, object())
        for batch in range(20):
            quiet.last_line -= TEST_LINE_GAP_S
            quiet.on_test_batch_end(trainer, object(), None, None, batch)
    assert [r.getMessage() for r in caplog.records] == ["fold 2: testing 20 batches"]


def test_setting_error_is_a_value_error() -> None:
    assert issubclass(SettingError, ValueError)


def test_sweep_summary_names_a_failed_job_and_its_error(tmp_path: Path, capsys, demo_data: Path, caplog) -> None:
    from workflow.sweep_summary import load_jobs

    job = tmp_path / "sweep" / "0"
    fail_run(job, capsys, "experiment=demo", f"data.root={demo_data}", "data.num_defective=-1")
    (job / ".hydra").mkdir()
    (job / ".hydra" / "overrides.yaml").write_text("- data.num_defective=-1\n")
    with caplog.at_level(logging.WARNING):
        assert load_jobs(tmp_path / "sweep") == []
    assert "failed: SettingError: data.num_defective=-1 must be >= 0" in caplog.text


def test_a_detection_method_on_images_without_a_defect_free_class_says_what_it_needs() -> None:
    with pytest.raises(DatasetError, match="4 defective and 0 defect-free images: a detection method learns from both"):
        BalancedBatchSampler(list(range(4)), [])
