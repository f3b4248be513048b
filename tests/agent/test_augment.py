"""Photometric augmentation of training frames (agent/training/augment.py)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from agent.training.augment import augment_frames
from agent.training.config import AugmentConfig

JITTER = AugmentConfig(p=1.0, brightness=0.3, contrast=0.3, saturation=0.3)


def frames(b: int = 6, s: int = 2, c: int = 1) -> torch.Tensor:
    """uint8 BGR (B, S, C, H, W, 3): mid-grey with a coloured patch, different per sample."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(60, 190, (b, 1, 1, 16, 24, 3), generator=g, dtype=torch.uint8)
    x = x.repeat(1, s, c, 1, 1, 1)
    x[..., 4:10, 6:14, 2] = 230  # a red patch (BGR): saturation has something to act on
    return x


def test_off_by_default_and_with_p_zero() -> None:
    x = frames()
    g = torch.Generator().manual_seed(0)
    assert augment_frames(x, AugmentConfig(), g) is x
    off = AugmentConfig(p=0.0, brightness=0.3)
    assert not off.enabled and augment_frames(x, off, g) is x


def test_shape_dtype_and_one_jitter_per_sample_for_all_its_frames() -> None:
    x = frames(s=2, c=2)
    out = augment_frames(x, JITTER, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert not torch.equal(out, x)
    # The history frames and cameras of a sample were identical and stay identical: the
    # motion between frames is the scene's, not the augmentation's.
    for s in range(2):
        for c in range(2):
            assert torch.equal(out[:, s, c], out[:, 0, 0])
    # Different samples get different factors.
    gain = out.float().mean((1, 2, 3, 4, 5)) / x.float().mean((1, 2, 3, 4, 5))
    assert gain.std() > 0.01


def test_the_same_generator_state_gives_the_same_batch() -> None:
    x = frames()
    a = augment_frames(x, JITTER, torch.Generator().manual_seed(7))
    b = augment_frames(x, JITTER, torch.Generator().manual_seed(7))
    c = augment_frames(x, JITTER, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_brightness_is_a_gain_within_its_range_and_keeps_black_black() -> None:
    x = torch.full((32, 1, 1, 8, 8, 3), 100, dtype=torch.uint8)
    x[:, :, :, 0, 0] = 0
    cfg = AugmentConfig(p=1.0, brightness=0.3)
    out = augment_frames(x, cfg, torch.Generator().manual_seed(0)).float()
    gain = out[:, 0, 0, 4, 4, 0] / 100.0
    assert gain.min() >= 0.7 - 0.01 and gain.max() <= 1.3 + 0.01
    assert gain.max() - gain.min() > 0.2  # the range is used
    assert (out[:, 0, 0, 0, 0] == 0).all()  # a gain keeps a night frame's black black


def test_saturation_zero_gives_grey() -> None:
    cfg = AugmentConfig(p=1.0, saturation=1.0)  # factors in [0, 2]
    x = frames(b=64)
    out = augment_frames(x, cfg, torch.Generator().manual_seed(0)).float()
    spread = (out.amax(-1) - out.amin(-1)).mean((1, 2, 3, 4))  # colourfulness per sample
    base = (x.float().amax(-1) - x.float().amin(-1)).mean((1, 2, 3, 4))
    ratio = spread / base
    assert ratio.min() < 0.2 and ratio.max() > 1.5  # from nearly grey to more colourful


def test_config_rejects_out_of_range_and_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        AugmentConfig(brightness=1.5)
    with pytest.raises(ValidationError):
        AugmentConfig.model_validate({"hue": 0.1})
