"""Deterministic k-means for grouping fooling images into new classes.

Initialisation is farthest-point (Gonzalez 1985) from the point nearest the mean, so the same input gives the
same clusters on every run and machine; then Lloyd iterations until the assignment stops changing.
"""
from __future__ import annotations

import torch
from torch import Tensor


def kmeans(points: Tensor, n_clusters: int, *, max_iterations: int = 100) -> tuple[Tensor, Tensor]:
    """Clusters ``points`` ``[N, d]`` into ``min(n_clusters, N)`` groups.

    Returns ``(centres [C, d], assignment [N] int64)``; clusters are numbered in the order of their first
    member in ``points``, so renumbering never depends on the arbitrary order the algorithm found them in.
    """
    n = points.shape[0]
    n_clusters = min(n_clusters, n)
    if n_clusters == 0:
        return points.new_zeros(0, points.shape[1]), torch.zeros(0, dtype=torch.int64, device=points.device)
    pts = points.double()
    first = int(((pts - pts.mean(dim=0)) ** 2).sum(dim=1).argmin())
    chosen = [first]
    nearest_sq = ((pts - pts[first]) ** 2).sum(dim=1)
    for _ in range(1, n_clusters):
        nxt = int(nearest_sq.argmax())
        chosen.append(nxt)
        nearest_sq = torch.minimum(nearest_sq, ((pts - pts[nxt]) ** 2).sum(dim=1))
    centres = pts[chosen].clone()
    assignment = torch.cdist(pts, centres).argmin(dim=1)
    for _ in range(max_iterations):
        for c in range(n_clusters):
            members = assignment == c
            if members.any():  # an empty cluster keeps its previous centre
                centres[c] = pts[members].mean(dim=0)
        new_assignment = torch.cdist(pts, centres).argmin(dim=1)
        if torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
    # renumber clusters by first appearance
    first_member = torch.full((n_clusters,), n, dtype=torch.int64, device=points.device)
    first_member.scatter_reduce_(0, assignment, torch.arange(n, device=points.device), reduce="amin")
    order = torch.argsort(first_member)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n_clusters, device=points.device)
    return centres[order].to(points.dtype), rank[assignment]
