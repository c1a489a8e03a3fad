"""The compute backends of an index: the optional faiss import, faiss's thread count, exact PyTorch top-k.

Every module of the package reaches faiss through :func:`import_faiss` here (tests replace it to exercise the
PyTorch path), and every vector entering an index goes through :func:`as_float32` and :func:`normalize`.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch


def import_faiss():
    """The faiss module, or ``None`` when it is not installed (tests force this to exercise the PyTorch path)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def as_float32(x) -> np.ndarray:
    """A C-contiguous float32 numpy array of ``x`` (a tensor, an array or a nested list)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); already-unit float32 input is returned as is, without a copy."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    if x.dtype == np.float32 and x.flags.c_contiguous and np.all(np.abs(n - 1) < 1e-4):
        return x
    return (x / np.maximum(n, 1e-12)).astype(np.float32, copy=False)


def exact_topk(queries: np.ndarray, vectors: np.ndarray | torch.Tensor, k: int, chunk: int = 65536,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k in PyTorch, streaming over ``vectors`` in chunks. Missing slots: -inf / -1.

    ``vectors`` may be a memory-mapped array (float16 or float32): only one chunk is converted at a time.
    ``exclude`` (sorted row numbers) leaves those rows out without copying the rest.
    """
    topk = RunningTopk(queries, k)
    n = vectors.shape[0]
    for lo in range(0, n, chunk):
        topk.update(vectors[lo:lo + chunk], lo, exclude)
    return topk.result()


class RunningTopk:
    """The exact top-k of fixed queries over blocks of vectors seen one at a time (a streamed build's ground truth)."""

    def __init__(self, queries, k: int):
        self.q = torch.from_numpy(as_float32(queries))
        self.k = k
        self.best_s = torch.full((self.q.shape[0], k), -math.inf)
        self.best_i = torch.full((self.q.shape[0], k), -1, dtype=torch.long)

    def update(self, block, start: int, exclude: np.ndarray | None = None) -> None:
        """Merge the rows ``start .. start + len(block)`` (``exclude``: sorted row numbers to leave out)."""
        if isinstance(block, torch.Tensor):
            b = block.float()
        else:  # a memory-mapped (read-only, maybe float16) block is converted; an in-memory float32 one is not copied
            arr = np.asarray(block)
            if arr.dtype != np.float32 or not arr.flags.writeable or not arr.flags.c_contiguous:
                arr = np.ascontiguousarray(arr, dtype=np.float32) if arr.flags.writeable else arr.astype(np.float32)
            b = torch.from_numpy(arr)
        s = self.q @ b.T
        if exclude is not None and len(exclude):
            ex = np.asarray(exclude, dtype=np.int64)
            inside = ex[(ex >= start) & (ex < start + b.shape[0])] - start
            s[:, torch.from_numpy(inside)] = -math.inf
        kk = min(self.k, s.shape[1])
        if kk == 0:
            return
        ts, ti = torch.topk(s, kk, dim=1)
        ti = torch.where(torch.isfinite(ts), ti + start, -1)
        cat_s, cat_i = torch.cat([self.best_s, ts], 1), torch.cat([self.best_i, ti], 1)
        order = torch.topk(cat_s, self.k, dim=1).indices
        self.best_s, self.best_i = torch.gather(cat_s, 1, order), torch.gather(cat_i, 1, order)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.best_s.numpy(), self.best_i.numpy()


@contextmanager
def faiss_threads(count: int | None):
    """Run faiss with ``count`` OpenMP threads inside the block (the setting is per calling thread)."""
    faiss = import_faiss()
    if faiss is None or count is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
