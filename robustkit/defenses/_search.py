"""Exact k-nearest-neighbour search over a fixed index of vectors, blocked so memory stays bounded.

Both backends return candidates that are then *re-ranked* by :func:`exact_rerank`: distances recomputed
from the differences ``q - x`` in float64 and sorted by ``(distance, index)``. The matmul expansion
``|q|^2 - 2 q.x + |x|^2`` used to find candidates rounds differently for different block shapes and
libraries; the re-ranked result does not, so the backends and block sizes agree and ties break by the
smaller training index, deterministically.
"""
from __future__ import annotations

import importlib
from typing import Optional

import torch
from torch import Tensor

#: extra candidates fetched before re-ranking, so float32 near-ties at rank k cannot drop a true neighbour
RERANK_MARGIN = 8


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
                     index_block: int) -> Tensor:
    """``[Q, k]`` indices of the (float32) nearest rows of ``index`` ``[M, d]`` to ``queries`` ``[Q, d]``.

    Never holds more than ``query_block x index_block`` distances: a running top-k per query block is
    merged with each index block's top-k.
    """
    m = index.shape[0]
    out = torch.empty(queries.shape[0], k, dtype=torch.int64, device=queries.device)
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
    return out


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

    def candidates(self, queries: Tensor, k: int, *, query_block: int) -> Tensor:
        out = []
        for qs in range(0, queries.shape[0], query_block):
            q = queries[qs:qs + query_block].detach().float().cpu().contiguous().numpy()
            _, idx = self.index.search(q, k)
            out.append(torch.from_numpy(idx))
        return torch.cat(out).to(queries.device) if out else torch.empty(0, k, dtype=torch.int64,
                                                                           device=queries.device)


def exact_rerank(index: Tensor, queries: Tensor, candidates: Tensor, k: int,
                 exclude: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Exact float64 Euclidean distances to the candidates, the best ``k`` sorted by (distance, index).

    ``exclude``: ``[Q]`` index per query that must not be returned (leave-one-out), or None.
    """
    cand = candidates.clamp_min(0)  # faiss pads with -1 when the index has fewer than k rows
    diff = index[cand].double() - queries[:, None, :].double()  # [Q, K', d]
    dist = diff.pow(2).sum(dim=2).sqrt()
    dist[candidates < 0] = float("inf")
    if exclude is not None:
        dist[cand == exclude[:, None]] = float("inf")
    # sort by index first, then stably by distance: equal distances keep increasing index order
    by_index = torch.argsort(cand, dim=1)
    cand, dist = cand.gather(1, by_index), dist.gather(1, by_index)
    order = torch.argsort(dist, dim=1, stable=True)[:, :k]
    return dist.gather(1, order).float(), cand.gather(1, order)
