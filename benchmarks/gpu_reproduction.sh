#!/usr/bin/env bash
# The paper-size results that need a GPU, each written to benchmarks/results/<name>.json by benchmarks/run.py
# (command, commit, device, date, wall time, metrics): Bai et al.'s NEU run (ConvNeXt V2 tiny, 3000 steps per fold,
# views made on the GPU) and Xu et al.'s KolektorSDD run at 1408x512, then k-means speed on NEU features.
#
#   bash benchmarks/gpu_reproduction.sh [DATA_DIR] [STEP ...]
#
# DATA_DIR holds NEU-DET.zip and KolektorSDD.zip (default ../shared/datasets); STEP is any of cluster_neu,
# weak_kolektor, kmeans_speed (default: all three, in that order). Commit first: benchmarks/run.py refuses a
# dirty tree; in a copy of the tree without .git, set SOURCE_COMMIT to the commit it holds. k-means runs on the
# GPU only with a GPU build of faiss (README, "faiss"). The paper's settings, set before these runs: selection fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/datasets}
shift || true
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(cluster_neu weak_kolektor kmeans_speed)
export WANDB_MODE=${WANDB_MODE:-offline}
for step in "${steps[@]}"; do
  case $step in
    cluster_neu)
      python benchmarks/run.py cluster_neu_gpu experiment=cluster_neu trainer=gpu "data.archive=$data/NEU-DET.zip" --selection fixed ;;
    weak_kolektor)
      python benchmarks/run.py weak_kolektor_gpu experiment=weak_kolektor trainer=gpu \
        "data.archive=$data/KolektorSDD.zip" --selection fixed ;;
    kmeans_speed)
      python benchmarks/kmeans_speed.py --archive "$data/NEU-DET.zip" --name kmeans_speed_gpu ;;
    *)
      echo "unknown step $step (cluster_neu, weak_kolektor, kmeans_speed)" >&2; exit 2 ;;
  esac
done
