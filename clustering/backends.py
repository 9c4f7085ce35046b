"""K-means backends behind one interface, chosen by name from a registry (Bai et al. 2024, 3.2.2).

* ``faiss``: ``faiss.Kmeans`` with nothing subsampled (``max_points_per_centroid`` raised to N),
  several restarts (``nredo``), a seed, on the GPU when faiss-gpu and a GPU are present.
* ``sklearn_minibatch``: scikit-learn's ``MiniBatchKMeans`` with the paper's batch_size 256 and
  reassignment_ratio 0.01, for paper-faithful runs.
* ``sklearn_gmm``: not k-means, scikit-learn's full-covariance ``GaussianMixture`` (started from k-means), for
  clusters that are ellipsoids rather than spheres; not in the paper.

Every backend's assignment, once returned, uses every cluster: an empty cluster takes one half of the largest
cluster, split in two by 2-means (DeepCluster also splits a cluster to fill an empty one, by perturbing its
centre), so no class of the classifier is left without samples.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

KMEANS_BACKENDS: dict[str, Callable[..., np.ndarray]] = {}


def register(name: str) -> Callable:
    def wrap(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        KMEANS_BACKENDS[name] = fn
        return fn

    return wrap


def fit_preprocess(features: np.ndarray, pca_dim: int | None, whiten: bool,
                   l2_normalize: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Optional PCA (whitened) to ``pca_dim`` dimensions fitted on ``features``, then optional L2 normalization
    (DeepCluster's recipe), as a function that applies both to any points of the same width.

    At most N - 1 components for N points: centred, they span no more, and whitening would blow up a component
    of (numerically) zero variance into noise that outweighs the rest, or NaN.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    pca = None
    if pca_dim:
        import faiss

        pca = faiss.PCAMatrix(x.shape[1], max(1, min(pca_dim, x.shape[1], x.shape[0] - 1)), -0.5 if whiten else 0.0)
        pca.train(x)

    def apply(points: np.ndarray) -> np.ndarray:
        y = np.ascontiguousarray(points, dtype=np.float32)
        if pca is not None:
            y = pca.apply_py(y)
        if l2_normalize:
            y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(y, dtype=np.float32)

    return apply


def preprocess(features: np.ndarray, pca_dim: int | None, whiten: bool, l2_normalize: bool) -> np.ndarray:
    """``features`` through :func:`fit_preprocess` fitted on themselves."""
    return fit_preprocess(features, pca_dim, whiten, l2_normalize)(features)


def split_in_two(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """A boolean mask of one side of ``points`` split by 2-means (scikit-learn's KMeans); points all alike
    cannot be split by distance: then the second half in order."""
    from sklearn.cluster import KMeans

    side = np.zeros(len(points), dtype=bool)
    if len(np.unique(points, axis=0)) >= 2:
        side = KMeans(n_clusters=2, n_init=3, random_state=seed).fit_predict(points).astype(bool)
    if side.all() or not side.any():
        side = np.arange(len(points)) >= len(points) // 2
    return side


def fill_empty_clusters(x: np.ndarray, assignment: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Give every empty cluster one side of the currently largest cluster split in two (:func:`split_in_two`)."""
    assignment = assignment.copy()
    for empty in range(k):
        if (assignment == empty).any():
            continue
        sizes = np.bincount(assignment, minlength=k)
        members = np.flatnonzero(assignment == int(sizes.argmax()))
        if members.size < 2:
            continue
        assignment[members[split_in_two(x[members], seed)]] = empty
    return assignment


def make_faiss_kmeans(n: int, d: int, k: int, seed: int = 0, niter: int = 20, nredo: int = 3,
                      use_gpu: bool | None = None):  # noqa: ANN201 - a faiss.Kmeans
    """A ``faiss.Kmeans`` that trains on all ``n`` points (faiss subsamples to 256 per centroid by default)."""
    import faiss

    gpu = use_gpu if use_gpu is not None else (hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0)
    return faiss.Kmeans(d, k, niter=niter, nredo=nredo, seed=seed, gpu=bool(gpu), verbose=False,
                        max_points_per_centroid=max(256, n), min_points_per_centroid=1)


@register("faiss")
def faiss_kmeans(x: np.ndarray, k: int, seed: int = 0, niter: int = 20, nredo: int = 3,
                 use_gpu: bool | None = None) -> np.ndarray:
    km = make_faiss_kmeans(x.shape[0], x.shape[1], k, seed, niter, nredo, use_gpu)
    km.train(x)
    _, labels = km.index.search(x, 1)
    return labels[:, 0].astype(np.int64)


@register("sklearn_minibatch")
def sklearn_minibatch_kmeans(x: np.ndarray, k: int, seed: int = 0, niter: int = 100, nredo: int = 3,
                             use_gpu: bool | None = None) -> np.ndarray:
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=k, batch_size=256, reassignment_ratio=0.01, random_state=seed, max_iter=niter,
                         n_init=nredo)
    return km.fit_predict(x).astype(np.int64)


def fit_standardize(x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function that shifts every column by ``x``'s mean and scales it by ``x``'s deviation (a constant column
    of ``x`` only shifted), in float64, returning float32."""
    x = np.asarray(x, dtype=np.float64)
    mean, std = x.mean(0), np.maximum(x.std(0), 1e-8)
    return lambda points: ((np.asarray(points, dtype=np.float64) - mean) / std).astype(np.float32)


def standardize(x: np.ndarray) -> np.ndarray:
    """Every column shifted to mean 0 and scaled to deviation 1 (a constant column to 0)."""
    return fit_standardize(x)(x)


def cluster(features: np.ndarray, k: int, backend: str = "faiss", seed: int = 0, pca_dim: int | None = None,
            whiten: bool = True, l2_normalize: bool = True, descriptors: np.ndarray | None = None,
            descriptor_weight: float = 1.0, **kwargs) -> np.ndarray:
    """Cluster ``features`` (N x d) into ``k`` groups with a registered backend; every group non-empty.

    With ``descriptors`` (N x e, e.g. :mod:`clustering.descriptors`), the points clustered are the
    preprocessed features beside the standardized descriptors preprocessed the same way and scaled by
    ``descriptor_weight``: with L2 normalization each block has norm 1 before the scaling, so the weight is the
    descriptors' share of every distance (weight 2: four times the features' share of a squared distance).
    """
    if backend not in KMEANS_BACKENDS:
        raise ValueError(f"unknown k-means backend {backend!r}; choose from {sorted(KMEANS_BACKENDS)}")
    if features.shape[0] < k:
        raise ValueError(f"cannot make {k} clusters from {features.shape[0]} points")
    x = clustered_points(features, pca_dim, whiten, l2_normalize, descriptors, descriptor_weight)
    assignment = KMEANS_BACKENDS[backend](x, k, seed=seed, **kwargs)
    return fill_empty_clusters(x, assignment, k, seed)


def clustered_points(features: np.ndarray, pca_dim: int | None = None, whiten: bool = True,
                     l2_normalize: bool = True, descriptors: np.ndarray | None = None,
                     descriptor_weight: float = 1.0) -> np.ndarray:
    """The points :func:`cluster` runs k-means on: ``features`` preprocessed, beside the descriptors (if any)
    standardized, preprocessed the same way and scaled by ``descriptor_weight`` (weight 0: the features alone)."""
    x = preprocess(features, pca_dim, whiten, l2_normalize)
    if descriptors is None or descriptor_weight == 0:
        return x
    if len(descriptors) != len(features):
        raise ValueError(f"{len(descriptors)} descriptors for {len(features)} feature vectors")
    described = preprocess(standardize(descriptors), pca_dim, whiten, l2_normalize)
    return np.ascontiguousarray(np.hstack([x, descriptor_weight * described]), dtype=np.float32)


@register("sklearn_gmm")
def sklearn_gaussian_mixture(x: np.ndarray, k: int, seed: int = 0, niter: int = 100, nredo: int = 3,
                             use_gpu: bool | None = None) -> np.ndarray:
    """A full-covariance Gaussian mixture (k-means started): clusters of any ellipsoidal shape, not only spheres."""
    from sklearn.mixture import GaussianMixture

    # reg_covar: a ridge on every covariance, so that a tight cluster in the whitened space stays invertible
    gmm = GaussianMixture(n_components=k, covariance_type="full", max_iter=niter, n_init=nredo, random_state=seed,
                          reg_covar=1e-4)
    return gmm.fit_predict(x).astype(np.int64)
