"""The VLM served from a child process (agent/reasoner/process.py): the same reasoning as in
this process, a dead child is replaced, a bad directory is a clear error, and the async
runtime works unchanged on top of it."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from test_reasoner_vlm import _images, _reasoner

from agent.reasoner.process import ProcessReasoner
from agent.reasoner.runtime import ReasonerRuntime
from agent.reasoner.types import ReasoningModel


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vlm")
    _reasoner().save_pretrained(path)
    return path


def _wait_dead(pid: int, timeout_s: float = 5.0) -> bool:
    """The (reaped) process `pid` is gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _wait_child_dead(remote: ProcessReasoner, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while remote.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    return not remote.alive


def test_child_reasons_exactly_like_the_model_in_this_process(vlm_dir):
    from agent.reasoner.vlm import VLMReasoner

    image = _images(1, seed=3)[0]
    local = VLMReasoner.from_pretrained(vlm_dir).eval().reason(image, 7)
    with ProcessReasoner(vlm_dir) as remote:
        assert isinstance(remote, ReasoningModel)
        assert remote.embedding_dim == local.embedding.shape[0]
        got = remote.reason(image, 7)
        pid = remote.pid
    assert got.frame == 7 and got.text == local.text
    # The child runs one torch thread, this process several: float sums may differ in order.
    for name in ("embedding", "flags", "intent"):
        np.testing.assert_allclose(getattr(got, name), getattr(local, name), rtol=1e-5, atol=1e-6)
    assert pid is not None and _wait_dead(pid), "close() must end the child"


def test_a_killed_child_is_replaced_then_given_up(vlm_dir):
    image = _images(1)[0]
    with ProcessReasoner(vlm_dir, max_restarts=1) as remote:
        first = remote.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert _wait_child_dead(remote)
        assert remote.reason(image, 1).frame == 1  # a fresh child answered
        assert remote.restarts == 1 and remote.pid not in (None, first)
        second = remote.pid
        assert second is not None
        os.kill(second, signal.SIGKILL)
        assert _wait_child_dead(remote)
        with pytest.raises(RuntimeError, match="not restarting"):
            remote.reason(image, 2)


def test_a_child_killed_during_a_call_fails_that_call_only(vlm_dir):
    image = _images(1)[0]
    with ProcessReasoner(vlm_dir) as remote:
        pid = remote.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # hung: the call times out and the child is killed
        remote.call_timeout_s = 0.5
        with pytest.raises(TimeoutError, match="no answer within 0.5 s"):
            remote.reason(image, 1)
        assert _wait_dead(pid)
        remote.call_timeout_s = 30.0
        assert remote.reason(image, 2).frame == 2


def test_a_missing_directory_names_it(tmp_path):
    missing = tmp_path / "no_vlm_here"
    with pytest.raises(RuntimeError, match=r"no_vlm_here.*failed to start.*does not exist"):
        ProcessReasoner(missing)


def test_async_runtime_on_a_process_publishes_reasonings(vlm_dir):
    image = _images(1)[0]
    with ProcessReasoner(vlm_dir) as remote, ReasonerRuntime(remote, "async") as runtime:
        assert runtime.submit(image, 0, 0.0)
        deadline = time.monotonic() + 30
        while runtime.latest() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        latest = runtime.latest()
        assert latest is not None and latest.frame == 0
        assert runtime.status().errors == 0
