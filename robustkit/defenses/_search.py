"""Exact k-nearest-neighbour search over a fixed index of vectors, blocked so memory stays bounded.

Both backends (faiss's ``IndexFlatL2``, or blocked torch matmul + top-k) rank by the float32 expansion
``|q|^2 - 2 q.x + |x|^2``, which rounds differently for different block shapes and libraries. Their
candidates are therefore *re-ranked* by :func:`exact_rerank` (distances from the differences ``q - x`` in
float64, sorted by ``(distance, index)``) and *certified* by :func:`certified_knn`: the float32 expansion is
off by at most ``ERROR_BOUND_FACTOR * (D + 2) * u * (|q|^2 + max |x|^2)`` (``u = 2^-24``; each of the three
terms is a float32 sum of ``D`` products, whatever the summation order), so when the exact k-th distance of
the re-ranked candidates lies below the largest fetched float32 distance minus that bound, no image left
out can come closer or tie. Queries that fail the test (near-ties at rank k, duplicates) are searched again
with 8x more candidates, up to the whole index. The result is the exact float64 k-NN, ties broken by the
smaller training index, identical across backends and block sizes; only ``k + 1`` candidates are fetched in
the common case.
"""
from __future__ import annotations

import importlib
from typing import Callable, Optional

import torch
from torch import Tensor

#: slack on the float32 rounding bound (the worst case already assumes every rounding adds up)
ERROR_BOUND_FACTOR = 2.0
#: float64 elements per re-ranking temporary (queries x candidates x dims): bounds memory when a query needs
#: many candidates
RERANK_ELEMENTS = 1 << 24
#: queries per faiss call (see FaissIndex.candidates)
FAISS_QUERY_BLOCK = 1 << 16


def faiss_module():
    """The ``faiss`` module, or None when it is not installed."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        return None


def faiss_has_gpu() -> bool:
    faiss = faiss_module()
    return faiss is not None and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def torch_candidates(index: Tensor, index_sq: Tensor, queries: Tensor, k: int, *, query_block: int,
                     index_block: int) -> tuple[Tensor, Tensor]:
    """``([Q, k] float32 squared distances, [Q, k] indices)`` of the (float32) nearest rows of ``index``
    ``[M, d]`` to ``queries`` ``[Q, d]``, in no particular order.

    Never holds more than ``query_block x index_block`` distances: a running top-k per query block is
    merged with each index block's top-k.
    """
    m = index.shape[0]
    out = torch.empty(queries.shape[0], k, dtype=torch.int64, device=queries.device)
    out_d = torch.empty(queries.shape[0], k, dtype=torch.float32, device=queries.device)
    for qs in range(0, queries.shape[0], query_block):
        q = queries[qs:qs + query_block]
        best_d = best_i = None
        for xs in range(0, m, index_block):
            # |q|^2 is the same for every candidate of a query, so it is left out of the ranking
            dist = torch.addmm(index_sq[xs:xs + index_block], q, index[xs:xs + index_block].T, alpha=-2.0)
            kk = min(k, dist.shape[1])
            d_blk, i_blk = torch.topk(dist, kk, dim=1, largest=False, sorted=False)
            i_blk += xs
            if best_d is None:
                best_d, best_i = d_blk, i_blk
            else:
                merged_d, merged_i = torch.cat([best_d, d_blk], 1), torch.cat([best_i, i_blk], 1)
                keep = torch.topk(merged_d, min(k, merged_d.shape[1]), dim=1, largest=False, sorted=False).indices
                best_d, best_i = merged_d.gather(1, keep), merged_i.gather(1, keep)
        out[qs:qs + q.shape[0]] = best_i
        out_d[qs:qs + q.shape[0]] = best_d + (q ** 2).sum(dim=1, keepdim=True)
    return out_d, out


class FaissIndex:
    """An exact ``IndexFlatL2`` over the index vectors (on the GPU when faiss has GPU support and the data
    is on CUDA); queries are searched ``query_block`` at a time."""

    def __init__(self, index: Tensor):
        faiss = faiss_module()
        if faiss is None:
            raise ImportError("backend='faiss' needs the faiss package: pip install faiss-cpu "
                              "(or faiss-gpu / conda's faiss-gpu for CUDA)")
        self.device = index.device
        flat = faiss.IndexFlatL2(index.shape[1])
        if index.is_cuda and faiss_has_gpu():
            self._resources = faiss.StandardGpuResources()
            flat = faiss.index_cpu_to_gpu(self._resources, index.device.index or 0, flat)
        flat.add(index.detach().float().cpu().contiguous().numpy())
        self.index = flat

    def candidates(self, queries: Tensor, k: int, *, query_block: int = FAISS_QUERY_BLOCK) -> tuple[Tensor, Tensor]:
        """``([Q, k] float32 squared distances, [Q, k] indices)``, as :func:`torch_candidates`.

        faiss tiles the distance computation itself (4096 queries x 1024 vectors), so ``query_block`` only
        bounds the ``[block, k]`` outputs; one call for all 10k MNIST queries took 0.8 s against 1.2 s in
        blocks of 4096 (two threads)."""
        dists, idxs = [], []
        for qs in range(0, queries.shape[0], query_block):
            q = queries[qs:qs + query_block].detach().float().cpu().contiguous().numpy()
            dist, idx = self.index.search(q, k)
            dists.append(torch.from_numpy(dist))
            idxs.append(torch.from_numpy(idx))
        if not idxs:
            return (torch.empty(0, k, device=queries.device),
                    torch.empty(0, k, dtype=torch.int64, device=queries.device))
        return torch.cat(dists).to(queries.device), torch.cat(idxs).to(queries.device)


def exact_rerank(index: Tensor, queries: Tensor, candidates: Tensor, k: int,
                 exclude: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Exact float64 *squared* Euclidean distances to the candidates, the best ``k`` sorted by
    (distance, index): ``([Q, k] float64, [Q, k] int64)``.

    ``exclude``: ``[Q]`` index per query that must not be returned (leave-one-out), or None. Negative
    candidates (faiss's padding) are never returned.
    """
    cand = candidates.clamp_min(0)
    dist = torch.empty(cand.shape, dtype=torch.float64, device=cand.device)
    rows = max(1, RERANK_ELEMENTS // max(1, cand.shape[1] * index.shape[1]))
    for s in range(0, cand.shape[0], rows):  # bounded [rows, K', d] temporaries
        diff = index[cand[s:s + rows]].double() - queries[s:s + rows, None, :].double()
        dist[s:s + rows] = diff.pow(2).sum(dim=2)
    dist[candidates < 0] = float("inf")
    if exclude is not None:
        dist[cand == exclude[:, None]] = float("inf")
    # sort by index first, then stably by distance: equal distances keep increasing index order
    by_index = torch.argsort(cand, dim=1)
    cand, dist = cand.gather(1, by_index), dist.gather(1, by_index)
    order = torch.argsort(dist, dim=1, stable=True)[:, :k]
    return dist.gather(1, order), cand.gather(1, order)


def certified_knn(index: Tensor, index_sq_max: float, queries: Tensor, k: int,
                  candidates: Callable[[Tensor, int], tuple[Tensor, Tensor]],
                  exclude: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Exact k-NN of ``queries`` in ``index``: ``([Q, k] float32 distances, [Q, k] int64 indices)``.

    ``candidates(queries, f)`` returns float32 squared-distance estimates and indices of ``f`` nearest
    rows; ``index_sq_max`` is ``max |x|^2`` over the index. See the module docstring for the certificate.
    """
    m, d = index.shape
    n = queries.shape[0]
    out_d = torch.empty(n, k, dtype=torch.float64, device=queries.device)
    out_i = torch.empty(n, k, dtype=torch.int64, device=queries.device)
    u = 2.0 ** -24
    tolerance = ERROR_BOUND_FACTOR * (d + 2) * u * ((queries.double() ** 2).sum(dim=1) + index_sq_max)
    todo = torch.arange(n, device=queries.device)
    fetch = min(k + 1 + (exclude is not None), m)
    while todo.numel():
        q = queries[todo]
        ex = None if exclude is None else exclude[todo]
        approx, cand = candidates(q, fetch)
        dist, idx = exact_rerank(index, q, cand, k, exclude=ex)
        if fetch == m:
            done = torch.ones(todo.numel(), dtype=torch.bool, device=queries.device)
        else:
            # every row left out has exact squared distance >= (largest fetched estimate) - tolerance
            done = dist[:, -1] < approx.double().max(dim=1).values - tolerance[todo]
        out_d[todo[done]], out_i[todo[done]] = dist[done], idx[done]
        todo = todo[~done]
        fetch = min(fetch * 8, m)
    return out_d.sqrt().float(), out_i
