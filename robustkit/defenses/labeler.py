"""The true-label generator of the retraining seed (Thakur, Ding and Li, "Evaluating a Simple Retraining
Strategy as a Defense Against Adversarial Attacks", Sec. 3.1 and 4.3): project images onto a PCA basis of the
training set (300 dimensions for CIFAR-10) and give each adversarial image the label of its nearest training
image (k = 1). Images far from every training image are *fooling images* and get a new class, or several new
classes found by clustering.

Example::

    labeler = KNNLabeler(pca_dim=300).fit(x_train, y_train)     # x_train [N, 3, 32, 32] in [0, 1]
    labels = labeler.predict(x_adv)                              # LongTensor [B]
"""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from robustkit.defenses._kmeans import kmeans
from robustkit.defenses._pca import PCABasis, fit_pca
from robustkit.defenses._search import FaissIndex, certified_knn, faiss_has_gpu, faiss_module, torch_candidates

ArrayLike = Union[Tensor, np.ndarray]
BACKENDS = ("auto", "faiss", "torch")


class KNNLabeler:
    """PCA + exact k-nearest-neighbour labels, with a fooling-image class.

    Args:
        pca_dim: dimensions kept by PCA (None: search the raw flattened pixels).
        k: neighbours that vote; ties between classes go to the class of the nearest neighbour among them.
        fooling_threshold: images whose *fooling distance* exceeds this are fooling images. The fooling
            distance is the input-space distance from the image to the PCA reconstruction of its nearest
            training image, ``sqrt(d_pca^2 + r^2)`` with ``d_pca`` the nearest distance in PCA space and ``r``
            the image's own distance from the PCA subspace: PCA alone maps noise close to the data mean
            (uniform noise lies nearer to CIFAR-10 training images in 300 PCA dims than held-out photos do),
            while almost all of its energy lies outside the subspace. Without PCA it is the plain nearest
            distance. None disables the fooling class; ``"auto"`` uses ``auto_factor`` times the
            ``auto_quantile`` quantile of the training set's own leave-one-out fooling distances, measured on
            ``auto_samples`` training images at evenly spaced indices (all of them when the set is smaller),
            each searched against the full training set minus itself. The defaults (1.1 x the 99th
            percentile) flag uniform noise on MNIST (50 dims) and CIFAR-10 (300 dims) and about 0.5% of
            held-out photos; on CIFAR-10 noise lies only just beyond the photos' own tail (fooling distance
            16.3-16.7 against a 99th percentile of 14.5 and a maximum of 18), see docs/retraining.md.
        fooling_clusters: number of new classes for fooling images: ``num_classes + j`` for
            ``j < fooling_clusters``, j found by deterministic k-means on the fooling images' PCA projections
            (see :meth:`fit_fooling`).
        backend: ``"faiss"`` (exact ``IndexFlatL2``; GPU index when faiss has GPU support and the data is on
            CUDA), ``"torch"`` (blocked matmul + top-k on the data's device), or ``"auto"``: faiss for CPU data
            when installed (the faster of the two on CPU, see bench/labeler.py), faiss-GPU for CUDA data when
            available, else torch.
        pca_solver: ``"auto"``, ``"covariance"`` (exact) or ``"randomized"``; see ``robustkit.defenses._pca``.
        query_block, index_block: rows per block; the largest temporary is ``query_block x index_block``
            float32 distances (torch backend) and ``query_block x D`` pixels.
        seed: seeds the randomized PCA solver.
    """

    def __init__(self, pca_dim: Optional[int] = 300, k: int = 1,
                 fooling_threshold: Union[None, float, str] = None, fooling_clusters: int = 1,
                 backend: str = "auto", *, pca_solver: str = "auto", auto_quantile: float = 0.99,
                 auto_factor: float = 1.1, auto_samples: int = 4096, query_block: int = 4096,
                 index_block: int = 16384, seed: int = 0):
        if pca_dim is not None and (isinstance(pca_dim, bool) or not isinstance(pca_dim, int) or pca_dim < 1):
            raise ValueError(f"pca_dim must be a positive int or None, got {pca_dim!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if not (fooling_threshold is None or fooling_threshold == "auto"
                or (isinstance(fooling_threshold, (int, float)) and fooling_threshold >= 0)):
            raise ValueError(f"fooling_threshold must be None, 'auto' or a number >= 0, got {fooling_threshold!r}")
        if isinstance(fooling_clusters, bool) or not isinstance(fooling_clusters, int) or fooling_clusters < 1:
            raise ValueError(f"fooling_clusters must be a positive int, got {fooling_clusters!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "faiss" and faiss_module() is None:
            raise ImportError("backend='faiss' needs the faiss package: pip install faiss-cpu")
        if not 0 < auto_quantile <= 1 or auto_factor <= 0:
            raise ValueError(f"auto_quantile must be in (0, 1] and auto_factor > 0, got {auto_quantile}, {auto_factor}")
        for name, value in (("auto_samples", auto_samples), ("query_block", query_block),
                            ("index_block", index_block)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.pca_dim, self.k, self.backend = pca_dim, k, backend
        self.fooling_threshold, self.fooling_clusters = fooling_threshold, fooling_clusters
        self.pca_solver, self.seed = pca_solver, seed
        self.auto_quantile, self.auto_factor, self.auto_samples = auto_quantile, auto_factor, auto_samples
        self.query_block, self.index_block = query_block, index_block
        self.fooling_centres_: Optional[Tensor] = None

    # ---- fitting ----------------------------------------------------------------------------------------
    def fit(self, x_train: ArrayLike, y_train: ArrayLike, num_classes: Optional[int] = None) -> "KNNLabeler":
        """Learns the PCA basis and indexes the projected training images; returns ``self``.

        ``x_train``: ``[N, ...]`` float tensor or array (flattened to ``[N, D]``); ``y_train``: ``[N]`` ints.
        ``num_classes`` defaults to ``y_train.max() + 1``; fooling classes are numbered from it.
        """
        x = _as_matrix(x_train, "x_train")
        y = _as_labels(y_train, "y_train", x.shape[0]).to(x.device)
        if x.shape[0] == 0:
            raise ValueError("x_train must hold at least one image")
        if self.k > x.shape[0]:
            raise ValueError(f"k must be <= the number of training images ({x.shape[0]}), got {self.k}")
        self.num_classes_ = int(y.max()) + 1 if num_classes is None else int(num_classes)
        if int(y.min()) < 0 or int(y.max()) >= self.num_classes_:
            raise ValueError(f"y_train must hold labels in [0, {self.num_classes_}), got "
                             f"[{int(y.min())}, {int(y.max())}]")
        self.device_ = x.device
        self.n_features_ = x.shape[1]
        self.pca_: Optional[PCABasis] = None
        if self.pca_dim is not None:
            self.pca_ = fit_pca(x, self.pca_dim, solver=self.pca_solver, seed=self.seed)
        self.index_ = self._project(x)
        self.index_sq_ = (self.index_ ** 2).sum(dim=1)
        self.index_sq_max_ = float((self.index_.double() ** 2).sum(dim=1).max())
        self.y_ = y
        self.backend_ = self._resolve_backend()
        self._faiss = FaissIndex(self.index_) if self.backend_ == "faiss" else None
        self.fooling_centres_ = None
        self.threshold_: Optional[float] = None
        if self.fooling_threshold == "auto":
            self.threshold_ = self._auto_threshold(x)
        elif self.fooling_threshold is not None:
            self.threshold_ = float(self.fooling_threshold)
        return self

    def fit_fooling(self, x_fooling: ArrayLike) -> "KNNLabeler":
        """Fixes the fooling-class centres by clustering ``x_fooling`` (all of it, whatever its distance).

        Without this, each :meth:`predict` call clusters the fooling images it finds itself, so their
        numbering depends on the batch; with it, fooling images go to the nearest fixed centre.
        """
        self._check_fitted()
        self.fooling_centres_, _ = kmeans(self.transform(x_fooling), self.fooling_clusters)
        return self

    # ---- queries ----------------------------------------------------------------------------------------
    def transform(self, x: ArrayLike) -> Tensor:
        """``[B, pca_dim]`` PCA projections of ``x`` (on the training data's device)."""
        self._check_fitted()
        return self._project(self._queries(x))

    def kneighbors(self, x: ArrayLike, k: Optional[int] = None) -> tuple[Tensor, Tensor]:
        """``(distances [B, k] float32, indices [B, k] int64)`` of the nearest training images, nearest
        first, ties by smaller index. Distances are Euclidean in PCA space. Returned on ``x``'s device."""
        self._check_fitted()
        k = self.k if k is None else k
        if k < 1 or k > self.index_.shape[0]:
            raise ValueError(f"k must be in [1, {self.index_.shape[0]}], got {k}")
        q = self.transform(x)
        dist, idx = self._search(q, k)
        return dist.to(_device_of(x)), idx.to(_device_of(x))

    def predict(self, x: ArrayLike) -> Tensor:
        """``[B]`` int64 labels: the k-NN vote, or a fooling class ``>= num_classes`` for fooling images."""
        self._check_fitted()
        raw = self._queries(x)
        q = self._project(raw)
        dist, idx = self._search(q, self.k)
        labels = _vote(self.y_[idx], self.num_classes_)
        if self.threshold_ is not None:
            fooling = _fooling_distance(dist[:, 0], self._residual(raw, q)) > self.threshold_
            if fooling.any():
                labels[fooling] = self.num_classes_ + self._fooling_cluster(q[fooling])
        return labels.to(_device_of(x))

    def fooling_distance(self, x: ArrayLike) -> Tensor:
        """``[B]`` input-space distance to the nearest training image's PCA reconstruction (see Args)."""
        self._check_fitted()
        raw = self._queries(x)
        q = self._project(raw)
        dist, _ = self._search(q, 1)
        return _fooling_distance(dist[:, 0], self._residual(raw, q)).to(_device_of(x))

    def fooling_mask(self, x: ArrayLike) -> Tensor:
        """``[B]`` bool: which images are fooling images (all False without a threshold)."""
        distance = self.fooling_distance(x)
        if self.threshold_ is None:
            return torch.zeros_like(distance, dtype=torch.bool)
        return distance > self.threshold_

    # ---- internals --------------------------------------------------------------------------------------
    def _resolve_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        if faiss_module() is None:
            return "torch"
        if self.device_.type == "cuda":
            return "faiss" if faiss_has_gpu() else "torch"
        return "faiss"

    def _project(self, x: Tensor) -> Tensor:
        """``[B, pca_dim]`` projections, computed block by block."""
        if self.pca_ is None:
            return x.contiguous()
        if x.shape[0] == 0:
            return x.new_zeros(0, self.pca_.components.shape[0])
        return torch.cat([self.pca_.transform(x[s:s + self.query_block])
                          for s in range(0, x.shape[0], self.query_block)])

    def _residual(self, x: Tensor, projected: Tensor) -> Tensor:
        """``[B]`` distances of the rows of ``x`` from the PCA subspace (zero without PCA). Only the fooling
        class needs them, so they are computed on demand: a full extra pass over the pixels."""
        if self.pca_ is None or x.shape[0] == 0:
            return x.new_zeros(x.shape[0])
        return torch.cat([self.pca_.residual_norm(x[s:s + self.query_block], projected[s:s + self.query_block])
                          for s in range(0, x.shape[0], self.query_block)])

    def _search(self, q: Tensor, k: int, exclude: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Exact k-NN (``_search.certified_knn``). Memory stays bounded without an outer loop here: the
        torch backend works in ``query_block x index_block`` tiles, faiss in its own tiles, and the
        re-ranking in chunks of ``_search.RERANK_ELEMENTS``."""
        if self._faiss is not None:
            candidates = self._faiss.candidates
        else:
            def candidates(block, fetch):
                return torch_candidates(self.index_, self.index_sq_, block, fetch, query_block=self.query_block,
                                        index_block=self.index_block)
        return certified_knn(self.index_, self.index_sq_max_, q, k, candidates, exclude=exclude)

    def _auto_threshold(self, x_train: Tensor) -> float:
        n = self.index_.shape[0]
        if n < 2:
            raise ValueError("fooling_threshold='auto' needs at least two training images")
        sample = torch.linspace(0, n - 1, min(self.auto_samples, n), device=self.device_).round().long().unique()
        dist, _ = self._search(self.index_[sample], 1, exclude=sample)
        distance = _fooling_distance(dist[:, 0], self._residual(x_train[sample], self.index_[sample]))
        return float(torch.quantile(distance.double(), self.auto_quantile)) * self.auto_factor

    def _fooling_cluster(self, q_fooling: Tensor) -> Tensor:
        if self.fooling_clusters == 1:
            return torch.zeros(q_fooling.shape[0], dtype=torch.int64, device=q_fooling.device)
        if self.fooling_centres_ is not None:
            return torch.cdist(q_fooling.double(), self.fooling_centres_.double()).argmin(dim=1)
        return kmeans(q_fooling, self.fooling_clusters)[1]

    def _queries(self, x: ArrayLike) -> Tensor:
        q = _as_matrix(x, "x")
        if q.shape[1] != self.n_features_:
            raise ValueError(f"x must have {self.n_features_} features per image (as x_train), got {q.shape[1]}")
        return q.to(self.device_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "index_"):
            raise RuntimeError("KNNLabeler is not fitted: call fit(x_train, y_train) first")

    def __repr__(self) -> str:
        return (f"KNNLabeler(pca_dim={self.pca_dim}, k={self.k}, fooling_threshold={self.fooling_threshold!r}, "
                f"fooling_clusters={self.fooling_clusters}, backend={self.backend!r})")


def _vote(neighbour_labels: Tensor, num_classes: int) -> Tensor:
    """Majority vote over ``[B, k]`` labels (nearest first); a tie goes to the tied class that appears first."""
    if neighbour_labels.shape[1] == 1:
        return neighbour_labels[:, 0].clone()
    counts = torch.zeros(neighbour_labels.shape[0], num_classes, dtype=torch.int64, device=neighbour_labels.device)
    counts.scatter_add_(1, neighbour_labels, torch.ones_like(neighbour_labels))
    votes = counts.gather(1, neighbour_labels)  # [B, k] vote count of each neighbour's class
    best = votes == votes.max(dim=1, keepdim=True).values
    first = best.int().argmax(dim=1)  # position of the nearest neighbour whose class has the most votes
    return neighbour_labels.gather(1, first[:, None])[:, 0]


def _fooling_distance(nearest_pca_distance: Tensor, residual: Tensor) -> Tensor:
    return (nearest_pca_distance.double() ** 2 + residual.double() ** 2).sqrt().float()


def _as_matrix(x: ArrayLike, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must hold floating-point pixels (e.g. images in [0, 1]), got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{name} must be [N, ...] with at least one feature dimension, got {list(x.shape)}")
    matrix = x.detach().reshape(x.shape[0], math.prod(x.shape[1:])).float()  # explicit width: -1 fails for N = 0
    finite = torch.isfinite(matrix).all(dim=1)
    if not bool(finite.all()):      # a NaN row would still get a label, or break the PCA's eigensolver
        row = int((~finite).nonzero()[0, 0])
        raise ValueError(f"{name} must be finite, got NaN or inf in row {row}")
    return matrix


def _as_labels(y: ArrayLike, name: str, n: int) -> Tensor:
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    if not isinstance(y, Tensor) or y.is_floating_point() or y.dtype == torch.bool or y.shape != (n,):
        got = f"{y.dtype} {list(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"{name} must be an integer [N] tensor or array with N = {n}, got {got}")
    return y.long()


def _device_of(x: ArrayLike) -> torch.device:
    return x.device if isinstance(x, Tensor) else torch.device("cpu")
