"""A `ReasoningModel` whose VLM lives in a child process, so reasoning never shares the
control loop's interpreter.

Why a process and not only a thread: torch ops release the GIL, but `generate`'s Python loop
(sampling, stopping criteria, cache bookkeeping) holds it between ops. A VLM in a background
*thread* therefore still steals interpreter time from the 20 Hz control step: measured on the
2-core bench machine, the async control step's p50 rose from 13 ms (distilled) to 16-20 ms
and its p99 past 40 ms. In a child process the VLM has its own interpreter and (with
`threads=1`) its own core; the parent only pickles one image (~100 kB) per reasoning and
waits on a pipe, which releases the GIL.

`ProcessReasoner.reason` is blocking, like every `ReasoningModel`: `ReasonerRuntime` calls it
from its worker thread in `async` mode (that thread now just waits on the pipe) or inline in
`sync` mode. Failures surface as exceptions, which the runtime counts as errors and the
control loop survives:
- the child cannot load the model -> `RuntimeError` from the constructor, with the child's
  message (e.g. the missing directory), never a hang;
- the child dies (killed, out of memory) -> `RuntimeError` for that call; the next call
  starts a fresh child (at most `max_restarts` times, then every call fails fast);
- the child does not answer within `call_timeout_s` -> it is killed, `TimeoutError`.

The child is a fresh interpreter (`python -m agent.reasoner.process`, the parent's
`sys.path`) talking over a socket pair with `multiprocessing`'s pickling `Connection`. Not
`multiprocessing.Process`: a fork of a process that already runs torch threads can deadlock,
and `spawn` re-imports the caller's main script, which breaks any user script without an
`if __name__ == "__main__"` guard. The child exits when its socket closes, so it never
outlives the agent.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from agent.reasoner.types import Reasoning

log = logging.getLogger(__name__)


def _serve(conn: Connection, vlm_dir: str, threads: int) -> None:
    """The child's main loop: load the VLM, then answer (image, frame) requests until the
    parent sends None or goes away."""
    try:
        import torch

        torch.set_num_threads(threads)
        from agent.reasoner.vlm import VLMReasoner

        model = VLMReasoner.from_pretrained(vlm_dir).eval()
    except Exception as exc:  # report the load failure to the parent instead of dying mute
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        conn.close()
        return
    conn.send(("ready", int(model.embedding_dim)))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if request is None:
            return
        image, frame = request
        try:
            conn.send(("ok", model.reason(image, frame)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class ProcessReasoner:
    """`VLMReasoner.from_pretrained(vlm_dir)` served from a child process (see the module
    docstring). `threads`: torch threads of the child."""

    def __init__(
        self,
        vlm_dir: str | Path,
        threads: int = 1,
        start_timeout_s: float = 300.0,
        call_timeout_s: float = 30.0,
        max_restarts: int = 3,
    ) -> None:
        if threads < 1:
            raise ValueError(f"`threads` must be >= 1, got {threads}")
        self.vlm_dir = str(vlm_dir)
        self.threads = threads
        self.start_timeout_s = start_timeout_s
        self.call_timeout_s = call_timeout_s
        self.max_restarts = max_restarts
        self.restarts = 0
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self.embedding_dim = self._start()

    # ---------------------------------------------------------------- ReasoningModel
    def reason(self, image_bgr: np.ndarray, frame: int) -> Reasoning:
        if self._process is None or self._process.poll() is not None:
            if self.restarts >= self.max_restarts:
                raise RuntimeError(
                    f"reasoner process for {self.vlm_dir} died {self.restarts + 1} times; "
                    "not restarting it again"
                )
            self.restarts += 1
            log.warning("reasoner process is not running; restart %d", self.restarts)
            self._stop()
            self._start()
        conn = self._conn
        assert conn is not None
        try:
            conn.send((np.ascontiguousarray(image_bgr), int(frame)))
            answered = conn.poll(self.call_timeout_s)
            if answered:
                status, payload = conn.recv()
        except (EOFError, OSError) as exc:
            code = None if self._process is None else self._process.poll()
            self._stop()
            raise RuntimeError(f"reasoner process died (exit code {code}): {exc!r}") from None
        if not answered:  # hung (or far too slow): a fresh child is started by the next call
            self._stop()
            raise TimeoutError(
                f"reasoner process gave no answer within {self.call_timeout_s} s; killed it"
            )
        if status != "ok":
            raise RuntimeError(f"reasoner process: {payload}")
        return payload

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Ask the child to exit; kill it if it does not within 2 s."""
        self._stop()

    def __enter__(self) -> ProcessReasoner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        """The child is running (False after it died, before the next call replaces it)."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def _start(self) -> int:
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        fd = theirs.fileno()
        command = [sys.executable, "-m", __name__, str(fd), self.vlm_dir, str(self.threads)]
        self._process = subprocess.Popen(command, pass_fds=(fd,), env=env)
        theirs.close()  # the parent keeps one end only, so a dead child reads as EOF
        self._conn = conn = Connection(ours.detach())
        try:
            if not conn.poll(self.start_timeout_s):
                raise TimeoutError(f"not ready within {self.start_timeout_s} s")
            status, payload = conn.recv()
        except (EOFError, OSError, TimeoutError) as exc:
            self._stop()
            raise RuntimeError(
                f"reasoner process for {self.vlm_dir} failed to start: {exc!r}"
            ) from None
        if status != "ready":
            self._stop()
            raise RuntimeError(f"reasoner process for {self.vlm_dir} failed to start: {payload}")
        return int(payload)

    def _stop(self) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        if process is not None:
            try:
                process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=2.0)
        if conn is not None:
            conn.close()


if __name__ == "__main__":  # the child: python -m agent.reasoner.process FD VLM_DIR THREADS
    _serve(Connection(int(sys.argv[1])), sys.argv[2], int(sys.argv[3]))
