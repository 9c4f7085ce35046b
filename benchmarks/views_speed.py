"""Time the clustering method's multi-view augmentation for one training batch: per image in the loader
(:class:`MultiCropViews`, the CPU presets) against per batch (:class:`BatchedMultiCropViews`, the GPU presets),
with a preset's view settings, on random images of the preset's input size.

    python benchmarks/views_speed.py --preset cluster_neu_cpu [--device cuda]

Writes ``benchmarks/results/<name>.json`` (median seconds per batch of each, and their ratio).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from cpu_precision import preset, timed  # noqa: E402

from datamodules.views import BatchedMultiCropViews, MultiCropViews  # noqa: E402
from workflow.run_info import require_clean_tree, write_result  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="cluster_neu_cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--name", default=None, help="the JSON's name (default views_speed_<preset>_<device>)")
    parser.add_argument("--allow-dirty", action="store_true", help="run even with uncommitted changes")
    args = parser.parse_args(argv)
    commit = require_clean_tree("benchmarks/views_speed.py", args.allow_dirty, ROOT)
    start = time.perf_counter()
    cfg = preset(args.preset)
    params = {k: (list(v) if not isinstance(v, int | float) else v) for k, v in cfg.model.training_plan.views.items()
              if k != "_target_"}
    per_image, per_batch = MultiCropViews(**params), BatchedMultiCropViews(**params)
    device = torch.device(args.device)
    images = torch.randint(0, 256, (cfg.model.training_plan.batch_size, 1, *cfg.data.image_size), dtype=torch.uint8)
    on_device = images.to(device)
    generator = torch.Generator(device).manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    result = {
        "batch_size": int(cfg.model.training_plan.batch_size), "image_size": list(cfg.data.image_size), "views": params,
        "threads": torch.get_num_threads(), "device": str(device),
        "per_image_s": timed(lambda: [per_image(i.float().div(255)) for i in images], args.repeats),
        "per_batch_s": timed(lambda: (per_batch(on_device.float().div(255), generator), sync()), args.repeats),
    }
    result["speedup"] = result["per_image_s"] / result["per_batch_s"]
    name = args.name or f"views_speed_{args.preset}_{device.type}"
    write_result(ROOT / "benchmarks" / "results", name, "python benchmarks/views_speed.py " + " ".join(sys.argv[1:]),
                 commit, time.perf_counter() - start, result, method="cluster", selection="fixed")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
