"""Weights files: safetensors tensors plus a JSON sidecar, written atomically, read without running code.

Layout for a pair named ``model``::

    model.safetensors   tensors (loaded with safetensors: no pickle, no code execution)
    model.json          {"format": "anybind", "version": 1, ..., "sha256": "<hex of model.safetensors>"}

Writing (:func:`save_tensors`): the new weights go to a hidden file named by their digest
(``.model.safetensors.<sha256[:16]>.pending``); then the sidecar naming that digest replaces the old one atomically
(the commit); then the weights take their final name. A reader that finds the pending file its sidecar names reads
it, so a kill at any instant leaves the previous pair or the new one, never a mix. The next save of the same name
finishes what a killed one committed and drops what it did not.

Reading: a sidecar reached through a link (``checkpoints/last``, ``checkpoints/last.json``) is resolved once and
the weights beside its target are read, so both files come from one checkpoint even while a trainer switches the
link. The sidecar must hold the weights' sha256 (a sidecar without one is refused, not trusted).
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import CheckpointError
from .atomic import atomic_write_json, fsync_dir, sha256_file

if TYPE_CHECKING:
    import torch

FORMAT = "anybind"
VERSION = 1
MAX_SIDECAR_BYTES = 64 << 20  # a sidecar is a few kB (a training state's tree a few MB); refuse to parse more
_SHA256 = re.compile(r"[0-9a-f]{64}")


def pair_paths(path: str | Path) -> tuple[Path, Path]:
    """``(X.safetensors, X.json)`` for a checkpoint named by either file, its stem, or a folder (``model``)."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_suffix(".safetensors"), p.with_suffix(".json")


def _pending(weights: Path, digest: str) -> Path:
    """Where :func:`save_tensors` keeps new weights between writing them and committing their sidecar."""
    return weights.with_name(f".{weights.name}.{digest[:16]}.pending")


def _final_name(pending: Path) -> Path:
    return pending.with_name(pending.name[1:].rsplit(".", 2)[0])


def _settle(weights: Path, sidecar: Path) -> None:
    """Finish the commit a killed save made (its sidecar names pending weights); drop pending weights no sidecar
    names (a save killed before its commit) and the temp files of a killed save. Only files of the exact pending
    and temp patterns of this name are touched."""
    try:
        digest = json.loads(sidecar.read_text()).get("sha256") if sidecar.is_file() else None
    except (OSError, ValueError, AttributeError):
        digest = None
    keep = _pending(weights, digest) if isinstance(digest, str) and _SHA256.fullmatch(digest) else None
    for p in weights.parent.glob(f".{glob.escape(weights.name)}.*.pending"):
        if p == keep:
            os.replace(p, weights)
        else:
            p.unlink(missing_ok=True)
    for name in (weights.name, sidecar.name):  # half-written temp files of a killed save of this name
        for p in weights.parent.glob(f".{glob.escape(name)}.*.tmp"):
            p.unlink(missing_ok=True)


def _plain_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors with a storage each (safetensors refuses shared storage); only what needs it is copied."""
    flat, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:
            v = v.clone()
        elif ptr:
            seen.add(ptr)
        flat[k] = v
    return flat


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None) -> str:
    """Save tensors atomically as safetensors plus a sidecar; returns the weights' sha256.

    The file is written straight from the tensors' memory (no serialized copy), so saving a multi-GB model needs
    no extra memory of its size. The pair is switched by one atomic replace of the sidecar (module docstring).
    """
    from safetensors.torch import save_file

    weights, sidecar = pair_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    _settle(weights, sidecar)
    fd, tmp = tempfile.mkstemp(dir=weights.parent, prefix=f".{weights.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(_plain_tensors(tensors), tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        pending = _pending(weights, digest)
        os.replace(tmp, pending)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    meta = {"format": FORMAT, "version": VERSION, **(metadata or {}), "sha256": digest}
    try:
        atomic_write_json(sidecar, meta)  # the commit: from here on readers take the new pair
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    os.replace(pending, weights)
    fsync_dir(weights.parent)
    return digest


def _read_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, sidecar) as a reader opens them: a linked sidecar is resolved once and the weights beside its
    target are taken, so a link switched meanwhile cannot pair two checkpoints."""
    weights, sidecar = pair_paths(path)
    if sidecar.exists():
        real = sidecar.resolve()
        beside = real.with_suffix(".safetensors")
        if real != sidecar.absolute() and (beside.exists() or not weights.exists()):
            return beside, real
    return weights, sidecar


def read_sidecar(path: str | Path) -> tuple[Path, Path, dict]:
    """``(weights file, sidecar file, sidecar)`` of the checkpoint at ``path``, the sidecar checked (JSON object,
    anybind format, the weights' sha256 present). Nothing of the weights is read."""
    weights, sidecar = _read_paths(path)
    if not sidecar.exists() and not weights.exists():
        raise CheckpointError(f"no checkpoint at {path}: neither {weights} nor {sidecar} exists")
    if not sidecar.exists():
        raise CheckpointError(f"checkpoint {weights} is incomplete: expected {weights.name} and {sidecar.name}")
    size = sidecar.stat().st_size
    if size > MAX_SIDECAR_BYTES:
        raise CheckpointError(f"checkpoint sidecar {sidecar} is {size:,} bytes; a sidecar holds at most "
                              f"{MAX_SIDECAR_BYTES:,} (is it an anybind sidecar?)")
    try:
        meta = json.loads(sidecar.read_bytes())
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint sidecar {sidecar} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{sidecar} is not an anybind checkpoint sidecar (format={found!r})")
    digest = meta.get("sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise CheckpointError(f"checkpoint sidecar {sidecar} does not hold the sha256 of its weights (every anybind "
                              f"checkpoint has one); it was damaged or not written by anybind, so {weights.name} "
                              "cannot be verified and is not loaded")
    pending = _pending(weights, digest)
    if pending.exists():  # a save committed this sidecar and has not yet given the weights their final name
        return pending, sidecar, meta
    if not weights.exists():
        raise CheckpointError(f"checkpoint {weights} is incomplete: expected {weights.name} and {sidecar.name}")
    return weights, sidecar, meta


# safetensors dtype names -> torch dtypes (the ones anybind and the model libraries write)
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
           "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
MAX_HEADER_BYTES = 100 << 20


class _ThreadedHash:
    """sha256 of byte ranges fed in order, computed on a second thread (hashlib drops the GIL on large updates) while
    the caller reads the next ones: a verified load costs one pass over the file, not a hash pass and a read pass."""

    def __init__(self):
        import hashlib
        import queue
        import threading

        self.h = hashlib.sha256()
        self.q: "queue.Queue" = queue.Queue(maxsize=8)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="anybind-sha256", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            try:
                self.h.update(item)
            except BaseException as exc:  # noqa: BLE001 - reported by hexdigest()
                self.error = exc

    def update(self, data) -> None:
        self.q.put(data)

    def hexdigest(self) -> str:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.h.hexdigest()


_READ_CHUNK = 64 << 20  # larger single reads into fresh memory measured slower (page faults in one long syscall)


def read_safetensors(path: str | Path, *, device: str = "cpu", sha256: str | None = None,
                     mmap: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors file ``path``, each read into its own freshly allocated memory.

    A memory-mapped load hands out views at whatever byte offset a tensor has in the file; kernels that pick their
    code path by alignment (oneDNN convolutions) then round differently from a model whose weights were allocated
    normally. Plain reads into ``torch.empty`` buffers give aligned tensors, hold the weights once (the page cache
    is not the process's memory) and check every header entry against the file's size. The tensors are read in
    file order, in chunks of at most 64 MiB. With ``sha256``, the file's digest is computed from the bytes as they
    are read (on a second thread) and a mismatch raises :class:`~anybind.errors.CheckpointError`: one pass over
    the file. Dtypes outside the common set go through the safetensors library.

    ``mmap=True`` instead maps the file copy-on-write and hands out views of it (no read, no copy: the weights live
    in the page cache, shared by every process that maps the file; writing to a tensor copies that page and never
    reaches the file). The views sit at the file's own offsets, so alignment-sensitive kernels may round the last
    bits differently from a plain load; with ``sha256`` the mapping is hashed once (which pages the file in).
    """
    import torch

    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb", buffering=0) as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= min(size - 8, MAX_HEADER_BYTES):
            raise ValueError(f"{path.name} is not a safetensors file (header length {n} for {size} bytes)")
        raw_header = _read_exact(f, n)
        header = json.loads(raw_header)
        if not isinstance(header, dict):
            raise ValueError(f"{path.name}: the safetensors header is not an object")
        header.pop("__metadata__", None)
        if any(not isinstance(v, dict) or v.get("dtype") not in _DTYPES for v in header.values()):
            from safetensors.torch import load_file

            _check_digest(path, sha256)
            return load_file(str(path), device=device)
        base, out = 8 + n, {}
        entries = _entries(path, header, base, size)
        if mmap:
            return _mapped(path, entries, base, size, sha256, device)
        # one pass hashes the file only if the tensors tile it: no gap, no overlap, nothing after the last
        ends = [0] + [end for start, end, *_ in entries]
        tiled = all(start == ends[i] for i, (start, *_) in enumerate(entries)) and base + ends[-1] == size
        hasher = _ThreadedHash() if sha256 and tiled else None
        if hasher is not None:
            hasher.update(head)
            hasher.update(raw_header)
        try:
            position = base
            for start, end, name, dtype, shape in entries:
                t = torch.empty(shape, dtype=dtype)
                if end > start:
                    if base + start != position:
                        f.seek(base + start)
                    view = memoryview(t.reshape(-1).view(torch.uint8).numpy())
                    for a in range(0, end - start, _READ_CHUNK):
                        piece = view[a:a + _READ_CHUNK]
                        _read_into(f, piece, path, name)
                        if hasher is not None:
                            hasher.update(piece)
                    position = base + end
                out[name] = t
        finally:
            digest = hasher.hexdigest() if hasher is not None else None
        if sha256:
            _check_digest(path, sha256, digest)
        return out if device == "cpu" else {k: v.to(device) for k, v in out.items()}


def _entries(path: Path, header: dict, base: int, size: int) -> list[tuple[int, int, str, Any, list[int]]]:
    """``(start, end, name, dtype, shape)`` per tensor of a safetensors header, in file order, each checked against
    its shape and the file's size."""
    import torch

    entries = []
    for name, info in header.items():
        dtype, shape = getattr(torch, _DTYPES[info["dtype"]]), [int(d) for d in info["shape"]]
        start, end = (int(o) for o in info["data_offsets"])
        if end - start != math.prod(shape) * dtype.itemsize or start < 0 or base + end > size:
            raise ValueError(f"{path.name}: tensor {name!r} ({info['dtype']} {info['shape']}) has offsets "
                             f"{start}..{end} that do not fit its shape or the file's {size} bytes")
        entries.append((start, end, name, dtype, shape))
    return sorted(entries, key=lambda e: (e[0], e[1]))


def _mapped(path: Path, entries: list, base: int, size: int, sha256: str | None, device: str) -> dict:
    import numpy as np
    import torch

    data = np.memmap(path, dtype=np.uint8, mode="c", shape=(size,))  # copy-on-write
    if sha256:
        hasher = _ThreadedHash()
        for a in range(0, size, _READ_CHUNK):
            hasher.update(memoryview(data[a:a + _READ_CHUNK]))
        _check_digest(path, sha256, hasher.hexdigest())
    out = {}
    for start, end, name, dtype, shape in entries:
        if end == start:
            t = torch.empty(shape, dtype=dtype)
        else:
            if (base + start) % dtype.itemsize:
                raise ValueError(f"{path.name}: tensor {name!r} starts at byte {base + start}, not a multiple of its "
                                 f"{dtype} size; load it without mmap")
            t = torch.from_numpy(data[base + start:base + end]).view(dtype).reshape(shape)
        out[name] = t if device == "cpu" else t.to(device)
    return out


def _check_digest(path: Path, sha256: str | None, digest: str | None = None) -> None:
    """Raise when ``path``'s sha256 (``digest`` when already computed, else hashed now) is not ``sha256``."""
    if sha256 and (digest if digest is not None else sha256_file(path)) != sha256:
        raise CheckpointError(f"checkpoint {path} is damaged: its sha256 does not match its sidecar")


def _read_exact(f, n: int) -> bytes:
    data = bytearray(n)
    _read_into(f, memoryview(data), Path(f.name), "header")
    return bytes(data)


def _read_into(f, view: memoryview, path: Path, what: str) -> None:
    done = 0
    while done < len(view):
        got = f.readinto(view[done:])
        if not got:
            raise ValueError(f"{path.name}: the file ends inside {what}")
        done += got



def read_weights(weights: Path, sidecar: Path, meta: dict, *, verify: bool, device: str,
                 mmap: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of ``weights`` as :func:`read_sidecar` found them (sha256 checked against ``meta`` if ``verify``;
    ``mmap``: views of the mapped file, :func:`read_safetensors`)."""
    for attempt in (weights, _final_name(weights)) if weights.name.endswith(".pending") else (weights,):
        try:
            try:
                return read_safetensors(attempt, device=device, sha256=meta["sha256"] if verify else None, mmap=mmap)
            except CheckpointError:  # the digest computed while reading differs
                raise CheckpointError(f"checkpoint {attempt} is damaged: its sha256 does not match "
                                      f"{sidecar.name}") from None
        except FileNotFoundError:  # the pending weights were just renamed to their final name: read that
            continue
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"checkpoint {attempt} could not be read: {exc}") from exc
    raise CheckpointError(f"checkpoint {weights} disappeared while it was read")


def load_tensors(path: str | Path, *, verify: bool = True, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and sidecar of the checkpoint at ``path`` (sha256 checked unless ``verify=False``)."""
    weights, sidecar, meta = read_sidecar(path)
    return read_weights(weights, sidecar, meta, verify=verify, device=device), meta


def tensor_shapes(weights: str | Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from a safetensors file's header; no tensor data is read."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except FileNotFoundError:
        if str(weights).endswith(".pending"):
            return tensor_shapes(_final_name(Path(weights)))
        raise
    except Exception as exc:
        raise CheckpointError(f"checkpoint {weights} could not be read: {exc}") from exc
