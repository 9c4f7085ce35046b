"""Seconds per training step and per evaluation batch of the two CPU presets, in float32 and in bf16-mixed.

    python benchmarks/cpu_precision.py

Tells whether the presets' ``${cpu_precision:bf16-mixed,...}`` (workflow/precision.py) chooses right on this
CPU. Each preset's network comes from its composed config (``experiment=cluster_neu_cpu``,
``experiment=weak_kolektor_cpu``) and gets batches of random pixels of the preset's shapes, no data needed:

- ``cluster_train_step``: ``model.training_plan.batch_size`` images x the views (``n_global`` of ``global_size``,
  ``n_local`` of ``local_size``), forward per view size, cross-entropy, backward, a step of the preset's optimizer;
- ``cluster_feature_batch``: one batch of the PseudoLabelReassigner feature pass (``data.eval_batch_size`` images at
  ``data.image_size``), no gradient;
- ``weak_train_step``: one defective + defect-free pair at ``data.image_size`` through trunk, LNet and DNet,
  backward, optimizer step (SGD, every part trained, as in stage 3);
- ``weak_eval_batch``: ``data.eval_batch_size`` images, no gradient.

bf16-mixed is what Lightning runs on a CPU: ``torch.autocast("cpu", torch.bfloat16)`` around the forward pass.
Median of ``--repeats`` after one warm-up. Writes ``benchmarks/results/<--name>.json`` (default
``cpu_precision_<PyTorch's CPU capability>``, e.g. ``cpu_precision_avx2``: the figures belong to the machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workflow.precision import cpu_precision, native_bf16, register_resolvers  # noqa: E402
from workflow.run_info import require_clean_tree, write_result  # noqa: E402
from workflow.timing import timed  # noqa: E402

PRECISIONS = ("32-true", "bf16-mixed")


def preset(name: str, *overrides: str) -> DictConfig:
    """The composed config of ``experiment=<name>`` with ``overrides``."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        # a class count left to the data (null) set to NEU's 6: timing needs no data
        extra = ["model.num_clusters=6", "model.num_classes=6"] if name.startswith("cluster") else []
        return compose("train", overrides=[f"experiment={name}", *extra, *overrides])




def cluster_workloads(precision: str) -> dict[str, Callable[[], object]]:
    cfg = preset("cluster_neu_cpu")
    model = instantiate(cfg.model, optimizer=None, _convert_="all")
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    views, n = cfg.model.training_plan.views, cfg.model.training_plan.batch_size
    train_views = [torch.rand(n * views.n_global, 1, views.global_size, views.global_size),
                   torch.rand(n * views.n_local, 1, views.local_size, views.local_size)]
    labels = [torch.randint(0, cfg.model.num_clusters, (len(v),)) for v in train_views]
    images = torch.rand(cfg.data.eval_batch_size, 1, *cfg.data.image_size)

    def train_step() -> None:
        with autocast(precision):
            loss = sum(F.cross_entropy(model(v), y) for v, y in zip(train_views, labels, strict=True))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def feature_batch() -> torch.Tensor:
        model.eval()
        with torch.no_grad(), autocast(precision):
            out = model.features(images)
        model.train()
        return out

    return {"cluster_train_step": train_step, "cluster_feature_batch": feature_batch}


def weak_workloads(precision: str) -> dict[str, Callable[[], object]]:
    cfg = preset("weak_kolektor_cpu")
    net = instantiate(cfg.model.net)
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    pair = torch.rand(2, 1, *cfg.data.image_size)
    images = torch.rand(cfg.data.eval_batch_size, 1, *cfg.data.image_size)

    def train_step() -> None:
        with autocast(precision):
            heatmap, logits = net(pair)
            loss = heatmap.float().mean() + F.binary_cross_entropy_with_logits(logits.float(), torch.tensor([1., 0.]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def eval_batch() -> object:
        net.eval()
        with torch.no_grad(), autocast(precision):
            out = net(images)
        net.train()
        return out

    return {"weak_train_step": train_step, "weak_eval_batch": eval_batch}


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default=None, help="the JSON's name under benchmarks/results/")
    parser.add_argument("--allow-dirty", action="store_true", help="run even with uncommitted changes")
    args = parser.parse_args()
    commit = require_clean_tree("benchmarks/cpu_precision.py", args.allow_dirty, ROOT)  # the code that runs
    start = time.perf_counter()
    seconds: dict[str, dict[str, float]] = {}
    for precision in PRECISIONS:
        for build in (cluster_workloads, weak_workloads):
            torch.manual_seed(0)
            for workload, step in build(precision).items():
                seconds.setdefault(workload, {})[precision] = timed(step, args.repeats)
                print(f"{workload} {precision}: {seconds[workload][precision]:.2f} s", flush=True)
    capability = torch.backends.cpu.get_cpu_capability()
    metrics = {"cpu_capability": capability, "native_bf16": native_bf16(),
               "cpu_precision_resolves_to": cpu_precision("bf16-mixed"), "repeats": args.repeats,
               "seconds": seconds,
               "bf16_speedup": {w: s["32-true"] / s["bf16-mixed"] for w, s in seconds.items()}}
    write_result(ROOT / "benchmarks" / "results", args.name or f"cpu_precision_{capability.lower()}",
                 "python benchmarks/cpu_precision.py " + " ".join(sys.argv[1:]), commit,
                 time.perf_counter() - start, metrics, method=["cluster", "weak"], selection="fixed")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
