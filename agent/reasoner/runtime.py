"""Runs a `ReasoningModel` beside the 20 Hz control loop without stalling it.

Modes:
  off    `submit` is a no-op and `latest()` is None: the planner drives without reasoning.
  sync   `submit` calls `model.reason` in the caller's thread (deterministic; for evaluation
         and tests). The control tick that triggers it pays the model's latency.
  async  `submit` hands the image to one background daemon thread and returns at once. There
         is at most one pending image: a newer one replaces it (the older one is counted as
         dropped), so work never queues up and `submit` never waits for the model.

In both active modes `rate_hz` limits reasoning to one image per 1/rate_hz seconds of game
time (`time_s` of the submit calls); submits in between are counted as `rate_limited`.

Reproducible async (`latency_s` set, async mode only): free-running async is wall-clock
driven, so *which* control tick first sees a reasoning depends on CPU load — a route run
twice (or on a busier machine, or in a Ray worker beside another one) can diverge from the
first tick a reasoning lands one tick later, and closed-loop driving amplifies that into a
different score. With `latency_s` the runtime models the VLM's latency in game time
instead: a reasoning lands exactly `latency_s` of game time after its image (on the first
submit at or past that time; the worker still runs in the background, and that submit waits
for it only if the VLM is slower in wall time than the simulation), and while one is in
flight newer images are dropped. The sequence of reasonings and the ticks that see them are
then a function of game time alone. This is how an evaluation in a synchronous simulator
(CARLA's Leaderboard mode, the embedded simulator) should run an async VLM: the scores are
those of a deployment whose VLM answers within `latency_s`.

`latest()` is the last successful reasoning, reused by every control tick until a newer one
lands. A model that raises (or returns a `Reasoning` with `error` set) never replaces it: the
error is counted and kept in `last_error`. A reasoning slower than `timeout_s` (wall clock) is
counted in `timeouts`, but its result is still published when it lands, unless by then it is
more than `max_age_s` of game time older than the newest submitted image (counted as `stale`
and discarded) — an old scene description is worse than none once the scene has moved on.

Threads: torch ops release the GIL, but `generate`'s Python loop (sampling, stopping
criteria, cache bookkeeping) holds it between ops, so an async worker still takes some time
from the control thread. The caller should size `torch.set_num_threads` so the worker and the
control loop do not oversubscribe the cores (e.g. 1-2 threads for the worker on a small CPU).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from agent.reasoner.types import Reasoning, ReasoningModel

Mode = Literal["off", "async", "sync"]
MODES: tuple[str, ...] = get_args(Mode)


@dataclass(frozen=True)
class RuntimeStatus:
    """A snapshot of the runtime's counters.

    age_frames / age_s: how old the latest reasoning's image is relative to the newest
    submitted image (None before the first reasoning lands).
    """

    mode: str
    age_frames: int | None
    age_s: float | None  # [s] game time
    submitted: int  # images handed to the model (sync) or the worker (async)
    completed: int  # reasonings published as latest
    dropped: int  # pending images replaced by a newer one before the worker took them
    rate_limited: int  # submits skipped by `rate_hz`
    errors: int
    timeouts: int  # reasonings slower than `timeout_s` (still used unless stale)
    stale: int  # results discarded for being older than `max_age_s` when they landed
    busy: bool  # the worker is reasoning now
    last_error: str | None


@dataclass(frozen=True)
class _Job:
    image: np.ndarray
    frame: int
    time_s: float
    epoch: int  # `reset()` count when submitted; results of an older epoch are discarded


@dataclass(frozen=True)
class _Outcome:
    """One finished call of the model: its result or error, and its wall-clock time."""

    job: _Job
    result: Reasoning | None
    error: str | None
    elapsed_s: float


# [s] wall clock a submit waits for a reasoning that is due in game time (`latency_s`) before
# counting it as failed: only a hung model gets near it (the VLM reasons in ~50 ms here).
LOCKSTEP_WAIT_S = 30.0


class ReasonerRuntime:
    """See the module docstring. Thread-safe; `close()` (or `with`) stops the worker."""

    def __init__(
        self,
        model: ReasoningModel | None,
        mode: Mode = "async",
        rate_hz: float = 2.0,
        timeout_s: float = 1.0,
        max_age_s: float = 2.0,
        latency_s: float | None = None,
        lockstep_wait_s: float = LOCKSTEP_WAIT_S,
    ):
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {list(MODES)}, got {mode!r}")
        if model is None and mode != "off":
            raise ValueError(f"`model` is required in mode {mode!r} (only 'off' runs without)")
        if latency_s is not None:
            if mode != "async":
                raise ValueError(f"`latency_s` applies to mode 'async' only, not {mode!r}")
            if not 0 < latency_s < max_age_s:
                raise ValueError(
                    f"`latency_s` must be > 0 and < max_age_s ({max_age_s}), got {latency_s}"
                )
        for name, value in (
            ("rate_hz", rate_hz),
            ("timeout_s", timeout_s),
            ("max_age_s", max_age_s),
        ):
            if not value > 0:
                raise ValueError(f"`{name}` must be > 0, got {value}")
        self.model = model
        self.mode: Mode = mode
        self.rate_hz = rate_hz
        self.timeout_s = timeout_s
        self.max_age_s = max_age_s
        self.latency_s = latency_s
        self.lockstep_wait_s = lockstep_wait_s
        self._lock = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._epoch = 0
        self._reset_state()
        if mode == "async":
            self._thread = threading.Thread(target=self._work, name="reasoner", daemon=True)
            self._thread.start()

    def _reset_state(self) -> None:
        self._latest: Reasoning | None = None
        self._latest_time_s = 0.0
        self._pending: _Job | None = None
        self._busy = False
        self._last_accept_s: float | None = None
        # Game-time latency (`latency_s`): the job the worker was handed and, once it is
        # done, its outcome, published when game time reaches job.time_s + latency_s.
        self._in_flight: _Job | None = None
        self._landed: _Outcome | None = None
        self._now_frame = 0
        self._now_s = 0.0
        self._counts = dict.fromkeys(
            ("submitted", "completed", "dropped", "rate_limited", "errors", "timeouts", "stale"), 0
        )
        self._last_error: str | None = None

    # ---------------------------------------------------------------- public
    def submit(self, image_bgr: np.ndarray, frame: int, time_s: float) -> bool:
        """Offer the current front image (H, W, 3) uint8 BGR taken at game time `time_s` [s].

        Returns True if it was handed to the model (sync: already reasoned; async: pending).
        Never waits for the model in async mode.
        """
        if self._closed:
            raise RuntimeError("ReasonerRuntime.submit after close()")
        if self.mode == "off":
            return False
        with self._lock:
            self._now_frame, self._now_s = int(frame), float(time_s)
            if self.latency_s is not None:
                self._land_due()
            last = self._last_accept_s
            # A jump back in time is a new route: accept and restart the rate limit.
            if last is not None and last <= time_s < last + 1.0 / self.rate_hz - 1e-9:
                self._counts["rate_limited"] += 1
                return False
            if self._in_flight is not None:  # game-time latency: the VLM is still busy
                self._counts["dropped"] += 1
                return False
            self._last_accept_s = float(time_s)
            self._counts["submitted"] += 1
            job = _Job(np.array(image_bgr, copy=True), int(frame), float(time_s), self._epoch)
            if self.latency_s is not None:
                self._in_flight = job
            if self.mode == "async":
                if self._pending is not None:
                    self._counts["dropped"] += 1
                self._pending = job
                self._lock.notify()
                return True
        self._run(job)  # sync: outside the lock, so status()/latest() stay responsive
        return True

    def latest(self) -> Reasoning | None:
        """The last successful reasoning (None in off mode or before the first one lands)."""
        with self._lock:
            return self._latest

    def status(self) -> RuntimeStatus:
        with self._lock:
            latest = self._latest
            return RuntimeStatus(
                mode=self.mode,
                age_frames=None if latest is None else self._now_frame - latest.frame,
                age_s=None if latest is None else self._now_s - self._latest_time_s,
                busy=self._busy,
                last_error=self._last_error,
                **self._counts,
            )

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    def reset(self) -> None:
        """Forget the latest reasoning, the pending image and the counters (a new route)."""
        with self._lock:
            self._epoch += 1
            self._reset_state()

    def close(self, join_timeout_s: float = 2.0) -> None:
        """Stop the worker. A reasoning in progress finishes in the (daemon) thread and is
        discarded; waits at most `join_timeout_s` [s] for it."""
        with self._lock:
            self._closed = True
            self._pending = None
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=join_timeout_s)
            self._thread = None

    def __enter__(self) -> ReasonerRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals
    def _work(self) -> None:
        while True:
            with self._lock:
                while self._pending is None and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                job, self._pending = self._pending, None
                self._busy = True
            if job is not None:
                self._run(job)

    def _run(self, job: _Job) -> None:
        if self.model is None:  # unreachable: checked in __init__
            raise RuntimeError("ReasonerRuntime has no model")
        t0 = time.perf_counter()
        result: Reasoning | None = None
        try:
            result = self.model.reason(job.image, job.frame)
            error = result.error
        except Exception as exc:  # the control loop must survive any model failure
            error = f"{type(exc).__name__}: {exc}"
        outcome = _Outcome(job, result, error, time.perf_counter() - t0)
        with self._lock:
            self._busy = False
            if self._closed or job.epoch != self._epoch:
                return
            if self.latency_s is None:
                self._publish(outcome)
            elif job is self._in_flight:  # published by the submit that reaches its due time
                self._landed = outcome
                self._lock.notify_all()

    def _land_due(self) -> None:
        """Game-time latency: publish the job in flight if game time has reached its landing
        time, waiting for the worker if it is not done yet. Called with the lock held."""
        job, latency = self._in_flight, self.latency_s
        if job is None or latency is None:
            return
        if self._now_s < job.time_s:  # time went back: a new route; its result is ignored
            self._in_flight = self._landed = None
            return
        if self._now_s < job.time_s + latency - 1e-9:
            return
        deadline = time.perf_counter() + self.lockstep_wait_s
        while self._landed is None and not self._closed:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            self._lock.wait(left)
        outcome = self._landed
        if outcome is None:  # a hung model: give up on this image; its late result is ignored
            outcome = _Outcome(
                job, None, f"no result within {self.lockstep_wait_s:.0f} s (wall clock)", 0.0
            )
        self._in_flight = self._landed = None
        self._publish(outcome)

    def _publish(self, outcome: _Outcome) -> None:
        """Count one finished reasoning and make it `latest` if it is usable (lock held)."""
        job, result, error = outcome.job, outcome.result, outcome.error
        if outcome.elapsed_s > self.timeout_s:
            self._counts["timeouts"] += 1
        if error is not None or result is None:
            self._counts["errors"] += 1
            self._last_error = f"frame {job.frame}: {error}"
        elif self._now_s - job.time_s > self.max_age_s:
            self._counts["stale"] += 1
        else:
            self._latest = result
            self._latest_time_s = job.time_s
            self._counts["completed"] += 1
