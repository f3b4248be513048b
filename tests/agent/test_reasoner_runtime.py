"""ReasonerRuntime: async never blocks, sync is rate-limited, failures are contained."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from agent.data.schema import FLAGS, INTENTS
from agent.reasoner.runtime import ReasonerRuntime
from agent.reasoner.types import Reasoning

IMAGE = np.zeros((8, 16, 3), np.uint8)


class FakeModel:
    """Reasons in `delay_s`; raises for the frames in `fail_frames`."""

    embedding_dim = 4

    def __init__(self, delay_s: float = 0.0, fail_frames: tuple[int, ...] = ()):
        self.delay_s = delay_s
        self.fail_frames = fail_frames
        self.frames: list[int] = []
        self.done = threading.Event()

    def reason(self, image_bgr: np.ndarray, frame: int) -> Reasoning:
        time.sleep(self.delay_s)
        self.frames.append(frame)
        self.done.set()
        if frame in self.fail_frames:
            raise RuntimeError(f"boom at {frame}")
        return Reasoning(
            text=f"frame {frame}",
            flags=np.zeros(len(FLAGS), np.float32),
            intent=np.full(len(INTENTS), 1 / len(INTENTS), np.float32),
            embedding=np.full(4, frame, np.float32),
            frame=frame,
            latency_s=self.delay_s,
        )


def _wait_for(predicate, timeout_s: float = 3.0) -> None:
    end = time.perf_counter() + timeout_s
    while not predicate():
        if time.perf_counter() > end:
            raise TimeoutError("condition not met")
        time.sleep(0.005)


def test_async_submit_never_blocks_and_drops_old_images():
    model = FakeModel(delay_s=0.3)
    with ReasonerRuntime(model, mode="async", rate_hz=1000.0) as rt:
        worst = 0.0
        for i in range(50):
            t0 = time.perf_counter()
            rt.submit(IMAGE, frame=i, time_s=i * 0.01)
            worst = max(worst, time.perf_counter() - t0)
            time.sleep(0.002)
        assert worst < 0.005
        _wait_for(lambda: rt.latest() is not None)
        first = rt.latest()
        assert first is not None and rt.latest() is first  # reused until a newer one lands
        _wait_for(lambda: rt.latest() is not None and rt.latest().frame == 49)
        status = rt.status()
        assert status.dropped > 0 and status.submitted == 50 and status.errors == 0
        assert status.age_frames == 0
        # The newest image was reasoned about; the images in between were never queued.
        assert model.frames[-1] == 49 and len(model.frames) == status.completed < 10


def test_sync_mode_is_rate_limited_by_game_time():
    model = FakeModel()
    rt = ReasonerRuntime(model, mode="sync", rate_hz=2.0)
    accepted = [rt.submit(IMAGE, frame=i, time_s=i * 0.05) for i in range(41)]  # 2 s at 20 Hz
    assert sum(accepted) == 5 and model.frames == [0, 10, 20, 30, 40]
    latest = rt.latest()
    assert latest is not None and latest.frame == 40
    assert rt.status().rate_limited == 36
    # time going backwards (a new route) restarts the limit
    assert rt.submit(IMAGE, frame=0, time_s=0.0)
    rt.close()


def test_model_error_keeps_previous_latest():
    model = FakeModel(fail_frames=(10,))
    rt = ReasonerRuntime(model, mode="sync", rate_hz=2.0)
    rt.submit(IMAGE, frame=0, time_s=0.0)
    rt.submit(IMAGE, frame=10, time_s=0.5)
    latest = rt.latest()
    assert latest is not None and latest.frame == 0
    assert rt.last_error is not None and "boom at 10" in rt.last_error
    status = rt.status()
    assert status.errors == 1 and status.age_frames == 10 and status.age_s == pytest.approx(0.5)
    rt.submit(IMAGE, frame=20, time_s=1.0)  # keeps going
    assert rt.latest() is not None and rt.latest().frame == 20


def test_async_error_does_not_kill_the_worker():
    model = FakeModel(fail_frames=(0,))
    with ReasonerRuntime(model, mode="async") as rt:
        rt.submit(IMAGE, frame=0, time_s=0.0)
        _wait_for(lambda: rt.status().errors == 1)
        rt.submit(IMAGE, frame=10, time_s=0.5)
        _wait_for(lambda: rt.latest() is not None)
        assert rt.latest().frame == 10 and "boom" in (rt.last_error or "")


def test_slow_results_count_as_timeouts_and_stale_ones_are_dropped():
    model = FakeModel(delay_s=0.05)
    rt = ReasonerRuntime(model, mode="sync", timeout_s=0.01)
    rt.submit(IMAGE, frame=0, time_s=0.0)
    assert rt.status().timeouts == 1 and rt.latest() is not None  # late but still used
    rt.close()

    model = FakeModel(delay_s=0.2)
    with ReasonerRuntime(model, mode="async", rate_hz=1000.0, max_age_s=1.0) as rt:
        rt.submit(IMAGE, frame=0, time_s=0.0)
        _wait_for(lambda: rt.status().busy)
        rt.submit(IMAGE, frame=100, time_s=5.0)  # game time moved on while frame 0 ran
        _wait_for(lambda: rt.status().stale == 1)
        _wait_for(lambda: rt.latest() is not None)
        assert rt.latest().frame == 100


def test_off_mode_does_nothing():
    model = FakeModel()
    rt = ReasonerRuntime(model, mode="off")
    assert rt.submit(IMAGE, frame=0, time_s=0.0) is False
    assert rt.latest() is None and model.frames == [] and rt.status().submitted == 0
    rt.close()
    ReasonerRuntime(None, mode="off").close()


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="`mode`"):
        ReasonerRuntime(FakeModel(), mode="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`model`"):
        ReasonerRuntime(None, mode="sync")
    with pytest.raises(ValueError, match="`rate_hz`"):
        ReasonerRuntime(FakeModel(), mode="sync", rate_hz=0.0)


def test_close_stops_the_worker():
    rt = ReasonerRuntime(FakeModel(), mode="async")
    thread = rt._thread
    rt.close()
    assert thread is not None and not thread.is_alive()
    with pytest.raises(RuntimeError, match="close"):
        rt.submit(IMAGE, frame=0, time_s=0.0)


def _lockstep_run(model: FakeModel, ticks: int, **kwargs) -> list[int | None]:
    """The frame of `latest()` seen by each 20 Hz control tick of a game-time-latency run."""
    seen: list[int | None] = []
    with ReasonerRuntime(model, mode="async", **kwargs) as rt:
        for i in range(ticks):
            rt.submit(IMAGE, frame=i, time_s=i * 0.05)
            latest = rt.latest()
            seen.append(None if latest is None else latest.frame)
    return seen


def test_game_time_latency_lands_on_the_same_tick_whatever_the_wall_clock():
    # 2 Hz reasoning, 0.1 s (2 ticks) modelled latency: image i*10 lands at tick i*10 + 2.
    expected = [None, None] + [10 * ((i - 2) // 10) for i in range(2, 41)]
    fast = _lockstep_run(FakeModel(delay_s=0.0), 41, rate_hz=2.0, latency_s=0.1)
    slow = _lockstep_run(FakeModel(delay_s=0.03), 41, rate_hz=2.0, latency_s=0.1)
    assert fast == slow == expected


def test_game_time_latency_waits_for_a_slow_model_and_drops_images_in_flight():
    model = FakeModel(delay_s=0.2)  # slower in wall time than the 3 ticks it is given
    with ReasonerRuntime(model, mode="async", rate_hz=1000.0, latency_s=0.15) as rt:
        for i in range(3):
            rt.submit(IMAGE, frame=i, time_s=i * 0.05)
            assert rt.latest() is None  # still in flight: tick 1 and 2 are dropped
        t0 = time.perf_counter()
        rt.submit(IMAGE, frame=3, time_s=0.15)  # the landing tick waits for the worker
        assert time.perf_counter() - t0 > 0.1
        latest = rt.latest()
        assert latest is not None and latest.frame == 0
        status = rt.status()
        assert status.dropped == 2 and status.submitted == 2 and status.age_frames == 3
        # The landing tick's own image went in flight at once: the model reasons 0, 3, 6 ...
        _wait_for(lambda: model.frames == [0, 3])


def test_game_time_latency_gives_up_on_a_hung_model():
    model = FakeModel(delay_s=0.5)
    with ReasonerRuntime(
        model, mode="async", rate_hz=1000.0, latency_s=0.05, lockstep_wait_s=0.1
    ) as rt:
        rt.submit(IMAGE, frame=0, time_s=0.0)
        rt.submit(IMAGE, frame=1, time_s=0.05)  # due: waits 0.1 s, then counts an error
        status = rt.status()
        assert status.errors == 1 and "no result within" in (status.last_error or "")
        assert rt.latest() is None and status.submitted == 2  # frame 1 went in flight
        _wait_for(lambda: len(model.frames) == 2)  # frame 0's late result is ignored ...
        rt.submit(IMAGE, frame=2, time_s=0.10)  # ... and frame 1 lands on time
        assert rt.latest() is not None and rt.latest().frame == 1


def test_game_time_latency_forgets_the_reasoning_in_flight_when_time_goes_back():
    model = FakeModel()
    with ReasonerRuntime(model, mode="async", rate_hz=2.0, latency_s=0.5) as rt:
        rt.submit(IMAGE, frame=100, time_s=10.0)  # in flight until 10.5 s
        assert rt.submit(IMAGE, frame=0, time_s=0.0)  # a new route starts at once
        rt.submit(IMAGE, frame=10, time_s=0.5)  # ... and its own image lands on time
        latest = rt.latest()
        assert latest is not None and latest.frame == 0


def test_game_time_latency_config_errors():
    with pytest.raises(ValueError, match="`latency_s` applies to mode 'async'"):
        ReasonerRuntime(FakeModel(), mode="sync", latency_s=0.1)
    with pytest.raises(ValueError, match="`latency_s` must be > 0 and < max_age_s"):
        ReasonerRuntime(FakeModel(), mode="async", latency_s=3.0, max_age_s=2.0)
