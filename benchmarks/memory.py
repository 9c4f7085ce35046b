"""Memory and loading speed of on-demand decoding: a Severstal-size training run, and KolektorSDD steps/s.

    nice -n 5 python benchmarks/memory.py            # writes benchmarks/results/memory_severstal_scale.json

1. **Severstal scale.** Generates a data set in the real Severstal layout (``train_images/*.jpg`` of 256x1600 +
   ``train.csv`` with run-length masks, as :mod:`datamodules.severstal` reads it; ``--n-images`` of them, 12,568
   by default as the Kaggle release) under a temporary folder, from a few noise tiles (cheap to write, costly as
   the real ones to decode), and runs ``train.py experiment=cluster_severstal_2c_cpu`` on all of it
   (``data.paper_subset=false``, the default ``data.cache=ram`` of at most ``data.cache_max_gib``) for ``--steps``
   training steps with ``--workers`` loader workers (the preset's 0 by default; the first pseudo-label assignment
   decodes and clusters every training image). A thread samples, every 0.2 s, the resident memory of the
   ``train.py`` process and all its descendants (loader workers): ``peak_rss_gib`` is the peak of their summed RSS
   (pages shared between a process and its forked workers count once per process: an upper bound),
   ``peak_pss_gib`` the peak of their summed proportional set size (shared pages split between the processes).
   The libraries alone (torch, timm, Lightning, faiss) hold about 1.5 GiB per process, counted again in RSS for
   every worker: a 120-image probe with 2 workers peaked at an RSS sum of 3.7 GiB, a PSS sum of 1.5 GiB.
2. **KolektorSDD steps/s.** On the real ``KolektorSDD.zip``, the ``weak_kolektor_cpu`` preset (440x160, fold 0)
   trained for ``--kolektor-steps`` steps (after 5 warm-up steps) twice, alternating, ``--repeats`` times each
   (few by default: on a shared 2-core machine a step took about 20 s):
   as before this change (every image decoded into RAM before training, ``data.cache=ram``, preloaded, no loader
   workers) and decoding on demand (``data.cache=none``, 2 loader workers). The ratio of their median steps/s is
   the figure; the issue's bar is >= 0.9.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules.rle import rle_encode  # noqa: E402
from workflow.run_info import require_clean_tree, write_result  # noqa: E402

SEVERSTAL_IMAGES = 12568
SHAPE = (256, 1600)


def write_severstal_scale(root: Path, n_images: int, tiles: int = 256, seed: int = 0) -> Path:
    """``root/train_images/<id>.jpg`` (``n_images`` JPEGs of 256x1600, copies of ``tiles`` noise tiles) and
    ``root/train.csv``: every 4th image has one rectangular defect of class 1..4 (cycling). Returns ``root``.
    More distinct tiles than the clustering's PCA dimensions (64), which a whitening of fewer points cannot fill."""
    rng = np.random.default_rng(seed)
    images = root / "train_images"
    images.mkdir(parents=True, exist_ok=True)
    encoded = []
    for _ in range(min(tiles, n_images)):
        pixels = np.clip(120 + rng.normal(0, 25, SHAPE), 0, 255).astype(np.uint8)
        path = images / "tile.jpg"
        Image.fromarray(pixels, mode="L").convert("RGB").save(path, quality=90)  # RGB, as the Kaggle JPEGs
        encoded.append(path.read_bytes())
    path.unlink()
    rows = ["ImageId,ClassId,EncodedPixels"]
    for i in range(n_images):
        image_id = f"{i:08x}b.jpg"
        (images / image_id).write_bytes(encoded[i % len(encoded)])
        if i % 4 == 0:
            mask = np.zeros(SHAPE, dtype=bool)
            x = int(rng.integers(0, SHAPE[1] - 100))
            mask[64:160, x : x + 80] = True
            rows.append(f"{image_id},{i // 4 % 4 + 1},{rle_encode(mask)}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return root


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from ``/proc/*/stat``)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [p for p, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def memory_of(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes; (0, 0) once it has exited."""
    try:
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        pss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                   if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0, 0
    return rss * 1024, pss * 1024


class TreeMemorySampler(threading.Thread):
    """Samples the summed RSS and PSS of a process tree every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = self.peak_main_rss = self.max_processes = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            tree = process_tree(self.pid)
            sizes = [memory_of(p) for p in tree]
            self.peak_rss = max(self.peak_rss, sum(s[0] for s in sizes))
            self.peak_pss = max(self.peak_pss, sum(s[1] for s in sizes))
            self.peak_main_rss = max(self.peak_main_rss, sizes[0][0])
            self.max_processes = max(self.max_processes, sum(1 for s in sizes if s[0]))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def severstal_overrides(root: Path, run_dir: Path, steps: int, workers: int) -> list[str]:
    return ["experiment=cluster_severstal_2c_cpu", f"data.root={root}", "data.archive=null",
            "data.paper_subset=false", f"data.num_workers={workers}", f"model.max_steps={steps}",
            f"model.warmup_steps={max(1, steps // 10)}", "folds=[0]", "logger=none", "print_config=false",
            "+trainer.limit_test_batches=4", f"hydra.run.dir={run_dir}"]


def severstal_run(n_images: int, steps: int, workers: int, tmp: Path) -> dict:
    """Generate the data, train on it in a ``train.py`` subprocess, and return its memory figures."""
    start = time.perf_counter()
    root = write_severstal_scale(tmp / "severstal", n_images)
    generated_s = time.perf_counter() - start
    overrides = severstal_overrides(root, tmp / "run", steps, workers)
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "train.py", *overrides], cwd=ROOT,
                             env={**os.environ, "WANDB_MODE": "offline"})
    sampler = TreeMemorySampler(child.pid)
    sampler.start()
    code = child.wait()
    sampler.stop()
    if code:
        raise RuntimeError(f"train.py exited with {code}: {' '.join(overrides)}")
    gib = 2**30
    return {"n_images": n_images, "steps": steps, "num_workers": workers,
            "peak_rss_gib": round(sampler.peak_rss / gib, 3), "peak_pss_gib": round(sampler.peak_pss / gib, 3),
            "peak_main_process_rss_gib": round(sampler.peak_main_rss / gib, 3),
            "max_processes": sampler.max_processes, "train_s": round(time.perf_counter() - start, 1),
            "generate_s": round(generated_s, 1),
            "train_command": "python train.py " + " ".join(shlex.quote(o) for o in overrides)}


def kolektor_steps_per_s(cfg, cache: str, workers: int, steps: int, warmup: int = 5) -> float:  # noqa: ANN001
    """Training steps per second of the weak preset's first stage on fold 0, timed after ``warmup`` steps."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    class Timer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_end(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            self.times.append(time.perf_counter())

    torch.manual_seed(0)
    datamodule = instantiate(cfg.data, fold=0, cache=cache, num_workers=workers)
    datamodule.prepare_data()
    datamodule.setup("fit")
    if cache == "ram":  # as before on-demand decoding: every image decoded into RAM before training
        datamodule.train_set.preload()
    model = instantiate(cfg.model, optimizer=instantiate(cfg.optimizer), _convert_="all")
    timer = Timer()
    trainer = instantiate(cfg.trainer, callbacks=[timer], logger=False, enable_checkpointing=False,
                          enable_model_summary=False, max_steps=warmup + steps)
    trainer.fit(model, datamodule=datamodule)
    return steps / (timer.times[-1] - timer.times[warmup - 1])


def kolektor_comparison(archive: Path, tmp: Path, steps: int, repeats: int) -> dict:
    """Steps/s before (all in RAM, no workers) and after (cache=none, 2 workers), alternating, median of each."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from cpu_precision import preset

    cfg = preset("weak_kolektor_cpu")
    cfg.data.archive, cfg.data.root = str(archive), str(tmp / "KolektorSDD")
    runs: dict[str, list[float]] = {"ram_preloaded_0_workers": [], "none_2_workers": []}
    for _ in range(repeats):
        runs["ram_preloaded_0_workers"].append(kolektor_steps_per_s(cfg, "ram", 0, steps))
        runs["none_2_workers"].append(kolektor_steps_per_s(cfg, "none", 2, steps))
    before, after = (statistics.median(v) for v in runs.values())
    return {"method": "weak", "preset": "weak_kolektor_cpu", "image_size": list(cfg.data.image_size), "fold": 0,
            "steps": steps, "repeats": repeats, "steps_per_s": {k: [round(x, 3) for x in v] for k, v in runs.items()},
            "median_steps_per_s_ram_preloaded": round(before, 3), "median_steps_per_s_cache_none_2_workers":
            round(after, 3), "ratio_none_to_ram": round(after / before, 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=SEVERSTAL_IMAGES)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, default=0, help="loader workers of the Severstal run (the preset's 0)")
    parser.add_argument("--kolektor", default=str(ROOT.parent / "shared" / "datasets" / "KolektorSDD.zip"))
    parser.add_argument("--kolektor-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--name", default="memory_severstal_scale")
    parser.add_argument("--allow-dirty", action="store_true", help="run even with uncommitted changes")
    args = parser.parse_args(argv)
    commit = require_clean_tree("benchmarks/memory.py", args.allow_dirty, ROOT)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="memory_bench_") as tmp:
        metrics = severstal_run(args.n_images, args.steps, args.workers, Path(tmp))
        if Path(args.kolektor).is_file() and args.kolektor_steps:
            metrics["kolektor"] = kolektor_comparison(Path(args.kolektor), Path(tmp), args.kolektor_steps,
                                                      args.repeats)
    command = "python benchmarks/memory.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    record = write_result(ROOT / "benchmarks" / "results", args.name, command.strip(), commit,
                          time.perf_counter() - start, metrics, selection="fixed", method="cluster")
    print({k: record[k] for k in ("name", "wall_s")}, metrics)


if __name__ == "__main__":
    main()
