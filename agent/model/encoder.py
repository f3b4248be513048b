"""Camera encoder: images (+ a short history) -> visual tokens.

A backbone registry (STYLE.md #4): `resnet-tiny` is a small ResNet built from a
`transformers.ResNetConfig` (trained from scratch here; no download); `timm:<name>` and
`torchvision:<name>` build those libraries' models by name when they are importable (on this
machine neither works with the CPU torch build, so they fail with instructions).

Each frame's feature map (h x w cells) becomes h*w tokens, projected to `d_model`, plus
learned embeddings of the cell position, the camera and the history step. Frames are
encoded independently, so at inference the agent caches the features of earlier frames
(`encode_frames`) and runs the backbone once per tick.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from agent.model.config import EncoderConfig

BackboneFactory = Callable[[EncoderConfig], tuple[nn.Module, int]]
BACKBONES: dict[str, BackboneFactory] = {}

# ImageNet-style normalisation of RGB in [0, 1].
RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    def wrap(factory: BackboneFactory) -> BackboneFactory:
        BACKBONES[name] = factory
        return factory

    return wrap


class _FeatureMap(nn.Module):
    """Adapts a backbone to `images (B, 3, H, W) -> feature map (B, C, h, w)`."""

    def __init__(self, body: nn.Module, pick: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        self.body = body
        self._pick = pick

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._pick(self.body(images))


@register_backbone("resnet-tiny")
def _resnet_tiny(cfg: EncoderConfig) -> tuple[nn.Module, int]:
    from transformers import ResNetBackbone, ResNetConfig

    if len(cfg.hidden_sizes) != len(cfg.depths):
        raise ValueError(
            f"encoder.hidden_sizes ({len(cfg.hidden_sizes)} stages) and encoder.depths "
            f"({len(cfg.depths)} stages) must have the same length"
        )
    stages = len(cfg.hidden_sizes)
    if cfg.fuse_previous_stage and stages < 2:
        raise ValueError("encoder.fuse_previous_stage needs at least 2 stages in hidden_sizes")
    wanted = [stages - 1, stages] if cfg.fuse_previous_stage else [stages]
    options: dict[str, Any] = {"out_features": [f"stage{i}" for i in wanted]}
    config = ResNetConfig(
        num_channels=3,
        embedding_size=cfg.hidden_sizes[0],
        hidden_sizes=list(cfg.hidden_sizes),
        depths=list(cfg.depths),
        layer_type="basic",
        **options,
    )
    body = ResNetBackbone(config)
    if cfg.fuse_previous_stage:
        return _FusedStages(body, cfg.hidden_sizes[-2], cfg.hidden_sizes[-1]), cfg.hidden_sizes[-1]
    return _FeatureMap(body, lambda out: out.feature_maps[-1]), cfg.hidden_sizes[-1]


class _FusedStages(nn.Module):
    """FPN-style top-down fusion of a ResNet backbone's last two stages: the stride-32 map
    is upsampled (nearest) onto the stride-16 grid and added to a 1x1 projection of the
    stride-16 map. Output channels = the last stage's."""

    def __init__(self, body: nn.Module, previous_channels: int, channels: int) -> None:
        super().__init__()
        self.body = body
        self.lateral = nn.Conv2d(previous_channels, channels, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        previous, last = self.body(images).feature_maps
        up = nn.functional.interpolate(last, size=previous.shape[-2:], mode="nearest")
        return self.lateral(previous) + up


def _external(prefix: str, cfg: EncoderConfig) -> tuple[nn.Module, int]:
    name = cfg.backbone.split(":", 1)[1]
    if cfg.fuse_previous_stage:
        raise ValueError(
            f"encoder.fuse_previous_stage is implemented for 'resnet-tiny' only, not "
            f"{cfg.backbone!r}"
        )
    try:
        if prefix == "timm":
            import timm

            body = timm.create_model(name, pretrained=False, features_only=True, out_indices=(-1,))
            channels = int(body.feature_info.channels()[-1])
            return _FeatureMap(body, lambda out: out[-1]), channels
        import torchvision

        model = getattr(torchvision.models, name)(weights=None)
        body = nn.Sequential(*list(model.children())[:-2])  # drop pooling + classifier
        with torch.no_grad():
            channels = int(body(torch.zeros(1, 3, 64, 64)).shape[1])
        return _FeatureMap(body, lambda out: out), channels
    except ImportError as exc:
        raise ValueError(
            f"encoder.backbone {cfg.backbone!r} needs the `{prefix}` package, which cannot be "
            f"imported here ({exc}); `pip install {prefix}` with a torchvision build matching "
            f"torch, or use the built-in 'resnet-tiny'"
        ) from exc


def build_backbone(cfg: EncoderConfig) -> tuple[nn.Module, int]:
    """(module images (B, 3, H, W) -> (B, C, h, w), C) for `cfg.backbone`."""
    for prefix in ("timm", "torchvision"):
        if cfg.backbone.startswith(prefix + ":"):
            return _external(prefix, cfg)
    if cfg.backbone not in BACKBONES:
        valid = sorted(BACKBONES) + ["timm:<name>", "torchvision:<name>"]
        raise ValueError(f"encoder.backbone {cfg.backbone!r} is unknown; valid: {valid}")
    return BACKBONES[cfg.backbone](cfg)


def preprocess(images_bgr: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 BGR (..., H, W, 3) -> normalised float RGB (..., 3, height, width)."""
    lead = images_bgr.shape[:-3]
    x = images_bgr.reshape(-1, *images_bgr.shape[-3:]).flip(-1).permute(0, 3, 1, 2).float() / 255
    if x.shape[-2:] != (height, width):
        x = nn.functional.interpolate(x, size=(height, width), mode="bilinear", antialias=True)
    mean = torch.tensor(RGB_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(RGB_STD, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.reshape(*lead, 3, height, width)


class CameraEncoder(nn.Module):
    """(B, S, C, H, W, 3) uint8 BGR frames (S = history + 1, oldest first; C cameras)
    -> tokens (B, S * C * h * w, d_model) and the current frame's pooled feature (B, d_model)."""

    def __init__(self, cfg: EncoderConfig, d_model: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone, channels = build_backbone(cfg)
        with torch.no_grad():
            probe = self.backbone(torch.zeros(1, 3, cfg.image_height, cfg.image_width))
        self.grid = (int(probe.shape[-2]), int(probe.shape[-1]))
        cells = self.grid[0] * self.grid[1]
        self.project = nn.Conv2d(channels, d_model, kernel_size=1)
        self.cell_embedding = nn.Parameter(torch.randn(cells, d_model) * 0.02)
        self.camera_embedding = nn.Parameter(torch.randn(cfg.cameras, d_model) * 0.02)
        self.step_embedding = nn.Parameter(torch.randn(cfg.history + 1, d_model) * 0.02)
        # Feed the backbone channels-last images (set by `agent.model.inference`).
        self.channels_last = False

    @property
    def steps(self) -> int:
        return self.cfg.history + 1

    def encode_frames(self, frames_bgr: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W, 3) uint8 -> per-frame features (B, C, h*w, d_model), without the
        history-step embedding (so they can be cached and reused at a later step)."""
        b, c = frames_bgr.shape[:2]
        x = preprocess(frames_bgr, self.cfg.image_height, self.cfg.image_width)
        x = x.reshape(b * c, *x.shape[2:])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        fmap = self.project(self.backbone(x))
        tokens = fmap.flatten(2).transpose(1, 2).reshape(b, c, -1, fmap.shape[1])
        return tokens + self.cell_embedding + self.camera_embedding[:c, None, :]

    def assemble(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, C, h*w, d) per-frame features -> (tokens (B, S*C*h*w, d), pooled (B, d))."""
        b, s = features.shape[:2]
        if s != self.steps:
            raise ValueError(f"encoder expects {self.steps} history steps, got {s}")
        features = features + self.step_embedding[:, None, None, :]
        pooled = features[:, -1].mean(dim=(1, 2))
        return features.reshape(b, -1, features.shape[-1]), pooled

    def forward(
        self, frames_bgr: torch.Tensor, history_grad: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode all S steps. With `history_grad=False` earlier steps are encoded without
        gradients (training: ~half the backward cost; the current frame still trains the
        backbone, which is shared)."""
        if frames_bgr.ndim != 6 or frames_bgr.shape[1] != self.steps:
            raise ValueError(
                f"frames must be (B, {self.steps}, C, H, W, 3), got {tuple(frames_bgr.shape)}"
            )
        current = self.encode_frames(frames_bgr[:, -1])
        if self.steps == 1:
            return self.assemble(current[:, None])
        with torch.set_grad_enabled(history_grad and torch.is_grad_enabled()):
            earlier = [self.encode_frames(frames_bgr[:, i]) for i in range(self.steps - 1)]
        return self.assemble(torch.stack([*earlier, current], dim=1))
