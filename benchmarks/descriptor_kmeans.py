"""A baseline without any network: k-means on a texture descriptor, test images given to the nearest centre.

    python benchmarks/descriptor_kmeans.py --archive ../shared/datasets/NEU-DET.zip

For each of the preset's folds (``--experiment``, default ``cluster_neu_cpu``: its data, image size, k-means
options and seed): the descriptor (``--descriptor``, default ``lbp_moments``, clustering/descriptors.py) of
every decoded image, as the clustering callback sees it; standardized and PCA-whitened on the training images (the
preset's ``pca_dim``), L2-normalized; faiss k-means with the preset's restarts on the training images; every test
image assigned to its nearest centre. ACC and NMI per fold against the true classes (``train_acc``: the training
images' clusters, what the preset's first pseudo-labels would be without the network's features), pooled as
train.py pools them (each fold's clusters mapped by its own Hungarian assignment; NMI the mean over folds).
Writes ``benchmarks/results/<--name>.json``: what the trained network adds over its texture prior.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from clustering.backends import fit_preprocess, fit_standardize, make_faiss_kmeans  # noqa: E402
from clustering.descriptors import texture_descriptor  # noqa: E402
from datamodules.dataset import SampleDataset  # noqa: E402
from metrics.clustering import clustering_summary, pooled_summary  # noqa: E402
from workflow.class_counts import fill_class_counts  # noqa: E402
from workflow.run_info import require_clean_tree, write_result  # noqa: E402


def describe(samples: list, size: tuple[int, int], name: str) -> torch.Tensor:
    """The descriptor of every sample's decoded image (pixels / 255, as the feature loader gives them)."""
    images = SampleDataset(samples, size).stacked_images()
    describe_batch = texture_descriptor(name)
    return torch.cat([describe_batch(images[i : i + 100].float() / 255) for i in range(0, len(images), 100)])


def fit_and_assign(train: np.ndarray, test: np.ndarray, k: int, pca_dim: int, nredo: int, seed: int,
                   whiten: bool = True, l2_normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """k-means on ``train`` (standardized, PCA, L2 as :func:`clustering.backends.cluster` does, all fitted on
    ``train``); both sets' nearest centres."""
    scale = fit_standardize(train)
    project = fit_preprocess(scale(train), pca_dim, whiten, l2_normalize)
    points, test_points = project(scale(train)), project(scale(test))
    kmeans = make_faiss_kmeans(len(points), points.shape[1], k, seed=seed, nredo=nredo)
    kmeans.train(points)
    return kmeans.index.search(points, 1)[1][:, 0], kmeans.index.search(test_points, 1)[1][:, 0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archive", default=str(ROOT.parent / "shared" / "datasets" / "NEU-DET.zip"))
    parser.add_argument("--root", default=None, help="the dataset folder instead of the archive")
    parser.add_argument("--experiment", default="cluster_neu_cpu")
    parser.add_argument("--descriptor", default="lbp_moments")
    parser.add_argument("--name", default="descriptor_kmeans_neu", help="the JSON's name under benchmarks/results/")
    parser.add_argument("--selection", default="test", choices=("test", "validation", "label_free", "fixed"),
                        help="test: lbp_moments was chosen against NEU's labels; fixed on data it was not chosen on")
    parser.add_argument("--allow-dirty", action="store_true", help="run even with uncommitted changes")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    commit = require_clean_tree("benchmarks/descriptor_kmeans.py", args.allow_dirty, ROOT)
    start = time.perf_counter()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        data = [f"data.root={args.root}", "data.archive=null"] if args.root else [f"data.archive={args.archive}"]
        cfg = compose("train", overrides=[f"experiment={args.experiment}", *data, f"paths.root_dir={ROOT}"])
    cfg = fill_class_counts(cfg)  # K left null: the data's number of classes
    options = cfg.callbacks.pseudo_labels
    k, size = int(cfg.model.num_clusters), tuple(cfg.data.image_size)
    folds, assignments = [], []
    for fold in cfg.folds:
        datamodule = instantiate(cfg.data, fold=fold)
        datamodule.prepare_data()
        train, test = datamodule.split(datamodule.list_samples())
        train_clusters, test_clusters = fit_and_assign(
            describe(train, size, args.descriptor).numpy(), describe(test, size, args.descriptor).numpy(), k,
            int(options.pca_dim), int(options.nredo), int(options.seed), bool(options.whiten),
            bool(options.l2_normalize))
        train_targets = torch.tensor([s.target for s in train])
        test_targets = torch.tensor([s.target for s in test])
        clusters = torch.from_numpy(test_clusters).long()
        summary = clustering_summary(clusters, test_targets, k, k)
        train_summary = clustering_summary(torch.from_numpy(train_clusters).long(), train_targets, k, k)
        folds.append({"fold": int(fold), "acc": summary["acc"], "nmi": summary["nmi"],
                      "train_acc": train_summary["acc"], "n_images": len(test)})
        assignments.append((clusters, test_targets))
    pooled = pooled_summary(assignments, k, k)
    metrics = {"folds": folds, "pooled": {key: pooled[key] for key in ("n_images", "acc", "nmi", "confusion")}}
    write_result(ROOT / "benchmarks" / "results", args.name,
                 "python benchmarks/descriptor_kmeans.py " + " ".join(argv), commit,
                 time.perf_counter() - start, metrics, descriptor=args.descriptor, experiment=args.experiment,
                 method="cluster", selection=args.selection)
    print(json.dumps(metrics["pooled"], indent=2, default=str))


if __name__ == "__main__":
    main()
