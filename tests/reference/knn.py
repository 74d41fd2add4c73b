"""Naive PCA + brute-force k-NN in float64, written from the definitions (no blocking, no candidates, no
re-ranking): the covariance's eigenvectors by numpy, the full query x train distance matrix, a stable sort."""
from __future__ import annotations

import numpy as np


def pca_basis(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mean [D], components [dim, D])`` with each component's largest-|entry| positive."""
    x = x.reshape(len(x), -1).astype(np.float64)
    mean = x.mean(axis=0)
    cov = np.cov(x - mean, rowvar=False)
    values, vectors = np.linalg.eigh(cov)
    components = vectors[:, np.argsort(values)[::-1][:dim]].T
    pivots = components[np.arange(dim), np.abs(components).argmax(axis=1)]
    return mean, components * np.sign(pivots)[:, None]


def project(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    return (x.reshape(len(x), -1).astype(np.float64) - mean) @ components.T


def kneighbors(train: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances and indices of the k nearest rows, ties broken by the smaller index."""
    dist = np.sqrt(((queries[:, None, :] - train[None, :, :]) ** 2).sum(axis=2))
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, axis=1), order


def vote(neighbour_labels: np.ndarray) -> np.ndarray:
    """Majority vote per row; among tied classes, the one whose nearest member comes first."""
    out = []
    for row in neighbour_labels:
        counts = {c: int((row == c).sum()) for c in row}
        best = max(counts.values())
        out.append(next(c for c in row if counts[c] == best))
    return np.array(out, dtype=np.int64)
