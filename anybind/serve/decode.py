"""Decoding uploads within a time limit, in worker processes that can be killed.

An upload is decoded and transformed exactly as :meth:`anybind.AnyBindModel.embed` does it (through
:class:`anybind.data.dataset.ItemDataset`: the same reader, the same transform, the same :class:`~anybind.errors.InputError`
messages), but in a worker process (``python -m anybind.serve.decode``). When a decode passes the time limit, or the
request that asked for it is cancelled, the worker is killed and a fresh one takes its place: the work is freed,
not left running. A decoder that crashes on a hostile file takes only its worker down.

Workers talk over a socket pair in plain bytes: a JSON request in, a JSON header plus an ``.npy`` array out
(``allow_pickle=False``), so nothing a worker sends back is ever unpickled by the server.

``workers=0`` decodes in the server's own threads instead (no extra processes): a decode past the limit still
gives the caller its error in time, but finishes its work (bounded by ``anybind.data.limits``) in the background.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InputError

log = logging.getLogger(__name__)

WORKER_START_TIMEOUT = 120.0  # seconds for a fresh worker to import torch and the decoders


class DecodeTimeout(InputError):
    """An upload took longer than the decode time limit."""


def decode_item(modality: str, item: Any, contract: dict) -> torch.Tensor:
    """One item -> the tensor its tower takes (the reader and transform of ``model.embed``)."""
    from ..data.dataset import ItemDataset

    _, x, _ = ItemDataset(modality, [item], contract)[0]
    return x


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _reply(header: dict, payload: bytes = b"") -> bytes:
    return json.dumps(header).encode() + b"\n" + payload


def worker_main(fd: int, imports: Sequence[str] = ()) -> None:
    """The worker loop: ``{"modality", "path", "contract"}`` in, ``{"status": ...}\\n<npy>`` out, until EOF."""
    import importlib
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's Ctrl-C is the server's to handle
    torch.set_num_threads(1)
    conn = Connection(fd)
    import anybind.data.readers  # noqa: F401 - import the decoders before saying ready
    import anybind.data.transforms  # noqa: F401

    for module in imports:  # plugins that register a modality or a reader in code
        importlib.import_module(module)
    conn.send_bytes(_reply({"status": "ready", "pid": os.getpid()}))
    while True:
        try:
            msg = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            x = decode_item(msg["modality"], msg["path"], msg["contract"])
            out = _reply({"status": "ok"}, _npy(x.numpy()))
        except InputError as err:
            out = _reply({"status": "input", "problem": err.problem})
        except Exception as exc:  # noqa: BLE001 - reported to the caller; the worker lives on
            out = _reply({"status": "error", "problem": f"{type(exc).__name__}: {exc}"})
        try:
            conn.send_bytes(out)
        except OSError:
            return


class _Worker:
    """One worker process and the server's end of its socket."""

    def __init__(self, imports: Sequence[str] = ()):
        ours, theirs = socket.socketpair()
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "anybind.serve.decode", str(theirs.fileno()), *imports],
                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())

    def fileno(self) -> int:
        return self.conn.fileno()

    def read(self) -> tuple[dict, bytes]:
        data = self.conn.recv_bytes()
        head, _, payload = data.partition(b"\n")
        return json.loads(head), payload

    def kill(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("decode worker %d did not exit after SIGKILL", self.proc.pid)


async def _readable(fd: int, timeout: float | None) -> None:
    """Wait until ``fd`` has data (or EOF) to read, at most ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await asyncio.wait_for(ready, timeout)
    finally:
        loop.remove_reader(fd)


class DecodePool:
    """``await pool.decode(modality, path, contract, timeout=..., name=...)`` -> tensor, or :class:`InputError`.

    ``name`` is what errors call the file (the uploaded file's name, not the server's temporary path).
    ``imports``: modules each worker imports first (plugins that register a modality or a reader in code rather than
    through the ``anybind.encoders`` entry point).
    """

    def __init__(self, workers: int = 2, *, imports: Sequence[str] = ()):
        if workers < 0:
            raise ValueError(f"decode workers must be >= 0, got {workers}")
        self.workers = int(workers)
        self.imports = tuple(imports)
        self._free: asyncio.Queue | None = None
        self._all: set[_Worker] = set()
        self._starting: set[asyncio.Task] = set()
        self.killed = 0  # workers killed for a timeout, a cancelled request or a crash
        self._closed = False

    async def start(self) -> None:
        """Start the workers and wait until each is ready."""
        if not self.workers:
            return
        self._free = asyncio.Queue()
        await asyncio.gather(*(self._spawn() for _ in range(self.workers)))

    async def _spawn(self) -> None:
        worker = await asyncio.to_thread(_Worker, self.imports)
        self._all.add(worker)
        try:
            await _readable(worker.fileno(), WORKER_START_TIMEOUT)
            head, _ = worker.read()
            if head.get("status") != "ready":
                raise RuntimeError(f"decode worker said {head}")
        except BaseException as exc:
            self._all.discard(worker)
            await asyncio.shield(asyncio.to_thread(worker.kill))
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
                raise
            raise RuntimeError(f"a decode worker failed to start (exit code {worker.proc.poll()}): {exc!r}") from exc
        if self._closed:
            await asyncio.to_thread(worker.kill)
            return
        self._free.put_nowait(worker)

    async def decode(self, modality: str, path: str | Path, contract: dict, *, timeout: float, name: str) -> torch.Tensor:
        if not self.workers:
            return await self._decode_in_thread(modality, path, contract, timeout, name)
        if self._free is None:
            raise RuntimeError("DecodePool.start() was not awaited")
        worker = await self._free.get()
        try:
            worker.conn.send_bytes(json.dumps({"modality": modality, "path": str(path), "contract": contract}).encode())
            await _readable(worker.fileno(), timeout)
            head, payload = worker.read()
        except asyncio.TimeoutError:
            self._replace(worker)
            raise DecodeTimeout(name, modality, f"decoding took longer than the decode time limit of {timeout:g} s") from None
        except (EOFError, OSError):
            code = worker.proc.poll()
            self._replace(worker)
            raise InputError(name, modality, f"the decoder crashed on this file (worker exit code {code})") from None
        except BaseException:  # cancelled (the request timed out or went away): free its work now
            self._replace(worker)
            raise
        self._free.put_nowait(worker)
        if head["status"] == "ok":
            return torch.from_numpy(np.load(io.BytesIO(payload), allow_pickle=False))
        problem = str(head.get("problem")).replace(str(path), name)  # the upload's name, not the server's temp path
        if head["status"] == "input":
            raise InputError(name, modality, problem)
        raise InputError(name, modality, f"could not be decoded ({problem})")

    async def _decode_in_thread(self, modality, path, contract, timeout, name) -> torch.Tensor:
        try:
            return await asyncio.wait_for(asyncio.to_thread(decode_item, modality, str(path), contract), timeout)
        except asyncio.TimeoutError:
            raise DecodeTimeout(name, modality, f"decoding took longer than the decode time limit of {timeout:g} s") from None
        except InputError as err:
            raise InputError(name, modality, err.problem.replace(str(path), name)) from None

    def _replace(self, worker: _Worker) -> None:
        """Kill ``worker`` now and start a fresh one in the background."""
        self.killed += 1
        self._all.discard(worker)
        if worker.proc.poll() is None:
            worker.proc.kill()  # synchronous: the work stops before the caller hears of it
        task = asyncio.get_running_loop().create_task(self._reap_and_spawn(worker))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _reap_and_spawn(self, worker: _Worker) -> None:
        await asyncio.to_thread(worker.kill)
        if not self._closed:
            try:
                await self._spawn()
            except RuntimeError as exc:
                log.error("%s", exc)

    def alive(self) -> int:
        return sum(w.proc.poll() is None for w in self._all)

    async def wait_ready(self) -> None:
        """Wait until the workers replacing killed ones have started (for tests and orderly shutdowns)."""
        while self._starting:
            await asyncio.gather(*list(self._starting), return_exceptions=True)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._starting):
            task.cancel()
        await asyncio.gather(*list(self._starting), return_exceptions=True)
        workers, self._all = list(self._all), set()
        await asyncio.gather(*(asyncio.to_thread(w.kill) for w in workers))

    def __repr__(self) -> str:
        return f"DecodePool(workers={self.workers}, alive={self.alive()}, killed={self.killed})"


if __name__ == "__main__":
    worker_main(int(sys.argv[1]), sys.argv[2:])
