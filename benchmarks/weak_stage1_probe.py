"""A stage-1-only probe of the weak method: does LNet stay lit on the defective images, and does it rank them?

    python benchmarks/weak_stage1_probe.py --steps 300 NAME experiment=weak_elpv_cpu data.image_size=[192,192]

Composes ``conf/train.yaml`` with the overrides, keeps only the configured stage 1 (its ``iterations`` set to
``--steps``, its ``lr_drops`` scaled to the new length) and trains one fold. Writes
``benchmarks/results/probes/<NAME>.json``: Q (the mean heat map, Eq. 3-4) of the defective and the defect-free
images every ``--every`` steps, the module's ``stage1_q_defective``/``stage1_q_clean`` (means over the stage's
last tenth), and the image-level AP of Q itself on the fold's training and test images (is the heat map lit
more on the defective images?). No DNet is trained: the AP here is LNet's, not the method's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metrics.detection import detection_summary  # noqa: E402
from train import build_fold  # noqa: E402
from workflow.precision import register_resolvers  # noqa: E402
from workflow.run_info import git_commit, write_result  # noqa: E402


class QTrace(L.Callback):
    """Q of the defective and the defect-free images of the batch, every ``every`` steps."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.rows: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        step = trainer.global_step - 1
        metrics = trainer.callback_metrics
        if step % self.every == 0 and "train/q_defective" in metrics:
            self.rows.append({"step": step, "q_defective": float(metrics["train/q_defective"]),
                              "q_clean": float(metrics.get("train/q_clean", float("nan"))),
                              "loss": float(metrics["train/loss"])})


@torch.no_grad()
def q_ap(model: L.LightningModule, dataset: torch.utils.data.Dataset, limit: int, batch: int = 16) -> dict:
    """Image-level AP of Q on (a seeded subset of at most ``limit`` images of) ``dataset`` and the mean Q of its
    defective and defect-free images."""
    model.eval()
    keep = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:limit].tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, keep), batch_size=batch)
    qs, labels = [], []
    for item in loader:
        _, heat = model.net.localize(item["image"])
        qs.append(heat.flatten(1).mean(1).float())
        labels.append(item["label"])
    q, y = torch.cat(qs), torch.cat(labels)
    return {"ap_of_q": detection_summary(q, y)["ap"], "q_defective": float(q[y > 0.5].mean()),
            "q_clean": float(q[y < 0.5].mean()), "defective_fraction": float((y > 0.5).float().mean())}


def stage1_only(cfg, steps: int) -> None:  # noqa: ANN001
    with open_dict(cfg):
        stage = cfg.model.stages[0]
        old = int(stage.iterations)
        drops = {int(int(k) * steps / old): v for k, v in dict(stage.get("lr_drops") or {}).items()}
        stage.iterations = steps
        stage.lr_drops = drops
        cfg.model.stages = [stage]
        cfg.callbacks = None
        cfg.logger = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--eval-images", type=int, default=200, help="images of each set the AP of Q is taken on")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    register_resolvers()
    commit = git_commit(ROOT)  # the code this probe starts from
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        # paths.root_dir: outside a Hydra app there is no ${hydra:runtime.cwd} to default to
        cfg = compose("train", overrides=[f"paths.root_dir={ROOT}", *args.overrides, "model.heatmap_dir=null"])
    stage1_only(cfg, args.steps)
    out = ROOT / "outputs" / "probes" / args.name
    L.seed_everything(cfg.seed + args.fold, workers=True)
    trace = QTrace(args.every)
    datamodule, model, trainer = build_fold(cfg, args.fold, out)
    trainer.callbacks.append(trace)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    wall = time.perf_counter() - start
    summary = {"steps": args.steps, "fit_wall_s": wall, "stage1": dict(getattr(model, "stage1_q", {}) or {}),
               "train": q_ap(model, datamodule.train_set, args.eval_images),
               "test": q_ap(model, datamodule.test_set, args.eval_images), "trace": trace.rows}
    command = (f"python benchmarks/weak_stage1_probe.py --steps {args.steps} --every {args.every} --fold {args.fold} "
               f"--eval-images {args.eval_images} {args.name} " + " ".join(args.overrides))
    write_result(ROOT / "benchmarks" / "results" / "probes", args.name, command, commit, wall,
                 {"probe": summary}, selection="fixed", method="weak")
    print({k: summary[k] for k in ("stage1", "train", "test")})


if __name__ == "__main__":
    main()
