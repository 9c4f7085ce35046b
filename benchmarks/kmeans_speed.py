"""One pseudo-label reassignment's clustering time on real NEU features: faiss vs scikit-learn MiniBatchKMeans.

    python benchmarks/kmeans_speed.py --archive ../shared/datasets/NEU-DET.zip

Features: every NEU image through a ``resnet18`` backbone (``--backbone``; the CPU preset's), random
initialisation unless ``--ckpt`` names a trained ClusteringModule checkpoint. Timed, median of ``--repeats``:
the shared preprocessing (PCA-whitening, L2; ``preprocess_s``), each backend's k-means on the preprocessed
features (``faiss_s``, ``sklearn_minibatch_s``: the clustering time compared), and both together as the
PseudoLabelReassigner callback runs them (``*_with_preprocess_s``);
ACC and NMI are those of the last repeat's assignment.
Writes ``benchmarks/results/<--name>.json`` (default ``kmeans_speed``); ``--pca 0`` clusters the raw features.

``--crops n`` clusters more points than NEU has images, for a training set of another size (Severstal has
12568 images): the features of ``n`` random crops of every image (``--crop-size`` px, 30-100% of the image,
flipped at random), N = 1800 n; each crop counts as its image's class for ACC and NMI.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torchvision.transforms import v2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clustering.backends import KMEANS_BACKENDS, cluster, preprocess  # noqa: E402
from datamodules import NEUDataModule  # noqa: E402
from datamodules.dataset import SampleDataset  # noqa: E402
from lightning_modules.checkpoints import load_method  # noqa: E402
from lightning_modules.cluster import create_backbone  # noqa: E402
from metrics.clustering import clustering_summary  # noqa: E402
from workflow.run_info import require_clean_tree, write_result  # noqa: E402


@torch.no_grad()
def neu_features(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, str]:
    dm = NEUDataModule(root=ROOT / "data" / "NEU-DET", archive=args.archive, image_size=(args.size, args.size))
    dm.prepare_data()
    samples = dm.list_samples()
    dataset = SampleDataset(samples, (args.size, args.size))
    if args.ckpt:
        model = load_method(args.ckpt)
        extract, source = model.features, f"trained checkpoint {args.ckpt}"
    else:
        torch.manual_seed(0)
        backbone = create_backbone(args.backbone, in_chans=1).eval()
        extract, source = (lambda x: backbone((x - 0.5) / 0.25)), f"{args.backbone}, random initialisation"
    images, targets = dataset.stacked_images(), dataset.targets
    if args.crops:
        torch.manual_seed(0)
        crop = v2.Compose([v2.RandomResizedCrop(args.crop_size, scale=(0.3, 1.0), antialias=True),
                           v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()])
        images = torch.stack([crop(image) for _ in range(args.crops) for image in images])
        targets = targets.repeat(args.crops)
    feats = [extract(images[i : i + 64].float() / 255) for i in range(0, len(images), 64)]
    return torch.cat(feats), targets, source + (f", {args.crops} random {args.crop_size} px crops of each image"
                                                 if args.crops else "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archive", default=str(ROOT.parent / "shared" / "datasets" / "NEU-DET.zip"))
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--pca", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--crops", type=int, default=0, help="cluster n random crops of each image (N = 1800 n)")
    parser.add_argument("--crop-size", type=int, default=96)
    parser.add_argument("--name", default="kmeans_speed", help="the JSON's name under benchmarks/results/")
    parser.add_argument("--allow-dirty", action="store_true", help="run even with uncommitted changes")
    args = parser.parse_args()
    commit = require_clean_tree("benchmarks/kmeans_speed.py", args.allow_dirty, ROOT)  # the code that runs
    start = time.perf_counter()
    features, targets, source = neu_features(args)
    x = features.numpy()
    result: dict = {"N": int(x.shape[0]), "d": int(x.shape[1]), "K": args.k, "pca_dim": args.pca, "features": source}
    prep_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        prepared = preprocess(x, args.pca, whiten=True, l2_normalize=True)
        prep_times.append(time.perf_counter() - t0)
    result["preprocess_s"] = statistics.median(prep_times)
    for backend in ("faiss", "sklearn_minibatch"):
        kmeans_times, total_times, labels = [], [], None
        for r in range(args.repeats):
            t0 = time.perf_counter()
            KMEANS_BACKENDS[backend](prepared, args.k, seed=r)
            kmeans_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            labels = cluster(x, args.k, backend, seed=r, pca_dim=args.pca)
            total_times.append(time.perf_counter() - t0)
        result[f"{backend}_s"] = statistics.median(kmeans_times)
        result[f"{backend}_with_preprocess_s"] = statistics.median(total_times)
        summary = clustering_summary(torch.from_numpy(labels), targets, args.k, args.k)
        result[f"{backend}_acc"], result[f"{backend}_nmi"] = summary["acc"], summary["nmi"]
    result["speedup"] = result["sklearn_minibatch_s"] / result["faiss_s"]
    result["speedup_with_preprocess"] = (result["sklearn_minibatch_with_preprocess_s"]
                                         / result["faiss_with_preprocess_s"])
    write_result(ROOT / "benchmarks" / "results", args.name,
                 "python benchmarks/kmeans_speed.py " + " ".join(sys.argv[1:]), commit, time.perf_counter() - start,
                 result, method="cluster", selection="fixed")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
