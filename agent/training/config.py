"""The training configuration (`vlmdrive train --config configs/tiny.yaml`).

Unknown keys are errors that name the file, line and field (scenarios.loader).
Stages run in order; each is one of:
- `vlm`: train the tiny VLM from scratch on auto-labelled captions + QA (skipped when
  `vlm.init` points at an existing model directory);
- `frozen`: VLM frozen; its embeddings are computed once per frame and the encoder,
  perception head, distillation head and planner are trained;
- `lora`: LoRA adapters (peft) on the VLM's language model, trained jointly with the
  planner through the alignment loss and the reasoning token; merged at the end;
- `joint`: everything trainable, at a lower learning rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.model.config import ModelConfig
from scenarios.loader import load_typed_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    train: Path  # shard directory from `vlmdrive collect`
    # More shard directories trained on with `train` (e.g. a DAgger round: `vlmdrive collect
    # --dagger ...`); episode ids are renumbered so they stay distinct across directories.
    extra: tuple[Path, ...] = ()
    val: Path | None = None  # held-out shard directory (eval suite) for open-loop metrics
    max_frames: int | None = Field(None, ge=1)  # use only the first N training frames


class VLMConfig(_Strict):
    init: Path | None = None  # an existing VLM directory (skips the `vlm` stage's build)
    image_size: int = Field(96, ge=16)  # [px] square input of the tiny VLM (36 patches of 16)
    vocab_size: int = Field(1024, ge=64)
    max_new_tokens: int = Field(48, ge=1)


class LossConfig(_Strict):
    mode: float = 1.0
    traj: float = 1.0
    align: float = 0.5
    collision: float = 1.0
    comfort: float = 0.1
    aux: float = 0.5
    distill: float = 0.5
    span: float = 1.0  # BEV span head (`perception.bev_span`), inside the aux weight
    objects: float = 1.0  # detection head (`perception.objects`), inside the aux weight
    lanes: float = 1.0  # lane head (`perception.lanes`), inside the aux weight
    vlm_lm: float = 0.2  # language-model loss kept during the lora / joint stages
    # The planner's score target: the anchor nearest the expert (DiffusionDrive) or the
    # denoised candidate nearest it (agent/model/losses.py)
    mode_target: Literal["anchor", "candidate"] = "anchor"


class AugmentConfig(_Strict):
    """Photometric augmentation of the driving model's frames (agent/training/augment.py).
    Each factor is drawn uniformly in [1 - x, 1 + x]; all 0 (the default) is off."""

    p: float = Field(0.8, ge=0, le=1)  # share of the samples that are jittered
    brightness: float = Field(0.0, ge=0, le=1)
    contrast: float = Field(0.0, ge=0, le=1)
    saturation: float = Field(0.0, ge=0, le=1)
    noise_std: float = Field(0.0, ge=0, le=0.5)  # Gaussian noise on the 0-1 intensity

    @property
    def enabled(self) -> bool:
        values = (self.brightness, self.contrast, self.saturation, self.noise_std)
        return self.p > 0 and any(v > 0 for v in values)


class StageConfig(_Strict):
    name: Literal["vlm", "frozen", "lora", "joint"]
    steps: int = Field(ge=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    lora_r: int = Field(8, ge=1)  # lora stage only
    lora_alpha: int = Field(16, ge=1)
    # Only the driving model's parameters whose names match one of these fnmatch patterns
    # train, e.g. ["planner.layers.*.score.*"]: the planner's scorer alone, so the
    # candidates, the BEV heads the guard plans from and the encoder stay exactly as they
    # were. Empty (the default): all of them. `frozen` stage only (the others train the VLM).
    trainable: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _trainable(self) -> StageConfig:
        if self.trainable and self.name != "frozen":
            raise ValueError(f"trainable applies to the 'frozen' stage only, not {self.name!r}")
        return self


class TrainConfig(_Strict):
    seed: int = 0
    threads: int = Field(2, ge=1)  # torch intra-op threads
    data: DataConfig
    out: Path = Path("checkpoints/vlmdrive-tiny")  # the finished checkpoint
    run_dir: Path = Path("runs/train-tiny")  # TensorBoard logs + resumable state
    checkpoint_every: int = Field(200, ge=1)  # [steps] resumable state is saved this often
    # Fine-tune: start the driving model from this checkpoint directory (its weights and
    # k-means anchors) instead of random weights and fresh anchors. Its model config is
    # used; a `model:` section that differs from it is an error (agent/training/trainer.py).
    init: Path | None = None
    model: ModelConfig = ModelConfig()
    vlm: VLMConfig = VLMConfig()
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()
    stages: tuple[StageConfig, ...]

    @model_validator(mode="after")
    def _stages(self) -> TrainConfig:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stages must not repeat, got {names}")
        order = ["vlm", "frozen", "lora", "joint"]
        if names != sorted(names, key=order.index):
            raise ValueError(f"stages must run in the order {order}, got {names}")
        if "vlm" not in names and self.vlm.init is None:
            raise ValueError("without a 'vlm' stage, vlm.init must name a trained VLM directory")
        return self


def load_train_config(path: str | Path) -> TrainConfig:
    """Parse and validate; relative data/out/run paths stay relative to the working dir."""
    return load_typed_yaml(path, TrainConfig, "training config")
