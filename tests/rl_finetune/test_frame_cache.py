"""The rollout policy's frame-feature cache: a frame the encoder has seen is looked up, not
encoded again, and acting gives the same result with and without the cache."""

from __future__ import annotations

import pytest
import torch
from test_policy import make_model, make_obs

from rl_finetune.config import PolicyConfig
from rl_finetune.frame_cache import FrameFeatureCache
from rl_finetune.policy import PlannerPolicy, PolicyObs


class CountingEncoder:
    """Features = the frame's mean, recording every batch it is asked to encode."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(frames))
        return frames.float().mean(dim=tuple(range(1, frames.ndim)))[:, None]


def frames(*values: int) -> torch.Tensor:
    return torch.stack([torch.full((2, 4, 3), v, dtype=torch.uint8) for v in values])


def test_only_unseen_frames_are_encoded_once_each() -> None:
    cache, encode = FrameFeatureCache(capacity=8), CountingEncoder()
    out = cache.features(frames(1, 2, 1), encode)
    assert encode.batches == [2]  # the repeated frame is encoded once
    assert out[:, 0].tolist() == [1.0, 2.0, 1.0]
    out = cache.features(frames(2, 3), encode)
    assert encode.batches == [2, 1]  # only frame 3 is new
    assert out[:, 0].tolist() == [2.0, 3.0]
    assert (cache.hits, cache.misses) == (2, 3)


def test_least_recently_used_frames_are_evicted() -> None:
    cache, encode = FrameFeatureCache(capacity=2), CountingEncoder()
    cache.features(frames(1), encode)
    cache.features(frames(2), encode)
    cache.features(frames(1), encode)  # 1 is now the most recent
    cache.features(frames(3), encode)  # evicts 2
    assert len(cache) == 2
    cache.features(frames(1), encode)
    assert encode.batches == [1, 1, 1]
    cache.features(frames(2), encode)
    assert encode.batches == [1, 1, 1, 1]
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ValueError, match="capacity"):
        FrameFeatureCache(capacity=0)


def test_same_bytes_in_another_shape_is_another_frame() -> None:
    cache, encode = FrameFeatureCache(), CountingEncoder()
    cache.features(torch.zeros(1, 2, 4, 3, dtype=torch.uint8), encode)
    cache.features(torch.zeros(1, 4, 2, 3, dtype=torch.uint8), encode)
    assert encode.batches == [1, 1]


def shifted(obs: PolicyObs, new: PolicyObs) -> PolicyObs:
    """The next step's observation: the current frame becomes the history frame."""
    image = torch.stack([obs.image[:, -1], new.image[:, -1]], dim=1)
    return PolicyObs(image, new.speed_mps, new.command, new.target_point)


def test_acting_with_the_cache_matches_acting_without_and_skips_the_history_frame() -> None:
    policy = PlannerPolicy(make_model())
    assert policy.frame_cache is not None
    calls: list[int] = []
    encode_frames = policy.model.encoder.encode_frames

    def counting(frames: torch.Tensor) -> torch.Tensor:
        calls.append(len(frames))
        return encode_frames(frames)

    policy.model.encoder.encode_frames = counting  # type: ignore[method-assign]
    obs = make_obs(b=3, seed=0)
    for step in range(3):
        cached = policy.act(obs, torch.Generator().manual_seed(step))
        cache, policy.frame_cache = policy.frame_cache, None
        plain = policy.act(obs, torch.Generator().manual_seed(step))
        policy.frame_cache = cache
        torch.testing.assert_close(cached.candidates, plain.candidates, rtol=0, atol=1e-5)
        torch.testing.assert_close(cached.logp, plain.logp, rtol=0, atol=1e-4)
        assert torch.equal(cached.mode, plain.mode)
        obs = shifted(obs, make_obs(b=3, seed=step + 1))
    # with the cache: 6 frames at first, then only the 3 new current frames per step;
    # without it (every other act call above): both steps of 3 envs, one batch per step
    assert calls[0::3] == [6, 3, 3]
    assert policy.frame_cache is not None and policy.frame_cache.hits == 3 + 3


def test_loading_weights_clears_the_cache_and_a_trained_encoder_has_none() -> None:
    policy = PlannerPolicy(make_model())
    policy.act(make_obs(b=2), torch.Generator().manual_seed(0))
    assert policy.frame_cache is not None and len(policy.frame_cache) == 4
    policy.load_state_dict(PlannerPolicy(make_model(seed=1)).state_dict())
    assert len(policy.frame_cache) == 0
    assert PlannerPolicy(make_model(), PolicyConfig(train_encoder=True)).frame_cache is None
