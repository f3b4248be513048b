"""Typed configuration of the driving model (saved beside its weights as `model.yaml`).

Every field has a unit or a shape in its comment; unknown keys are rejected, so a typo in
a config file is an error that names the key instead of a silently ignored setting.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.data.schema import FLAGS, HORIZON_POSES, INTENTS, LIGHT_STATES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderConfig(_Strict):
    """The camera encoder: a backbone from a registry (see agent/model/encoder.py)."""

    backbone: str = "resnet-tiny"  # registry name; "timm:<name>" / "torchvision:<name>" too
    hidden_sizes: tuple[int, ...] = (32, 64, 96, 128)  # channels per stage (resnet-tiny)
    depths: tuple[int, ...] = (1, 1, 1, 1)  # residual blocks per stage (resnet-tiny)
    image_height: int = Field(128, ge=32)  # [px] camera frames are resized to this
    image_width: int = Field(256, ge=32)  # [px]
    cameras: int = Field(1, ge=1, le=8)  # camera count (Leaderboard order of sensors())
    history: int = Field(1, ge=0, le=4)  # earlier frames, 0.5 s apart (0: current only)
    # Fuse the last stage (stride 32) into the one before it (stride 16), FPN-style: 4x the
    # visual tokens (8 x 16 at 256 x 128), each covering half the width of a stride-32 cell,
    # so a cone 30 m ahead (~6 px wide) still lands in its own token. resnet-tiny only.
    fuse_previous_stage: bool = False


class PerceptionConfig(_Strict):
    """Auxiliary perception: a BEV occupancy grid ahead and the governing light's state.

    Cells are `bev_cell_m` long (x) and `bev_cell_y_m` wide (y; None: square). The width
    decides what the safety guard can tell apart beside the ego: with 4 m columns split at
    y = 0 a cone on the lane line (y = 2 m) and a car in the next lane both fill the
    columns the ego drives in, so a perfect grid blocks the expert's own plan on 7 % of the
    eval suite's frames; 1 m columns centred on the ego (y in [-12.5, 12.5]) on 2.5 %
    (measured offline with ground-truth occupancy, the guard's checks on the expert plan).
    """

    bev_x_m: tuple[float, float] = (-8.0, 56.0)  # [m] grid extent forward (x)
    bev_y_m: tuple[float, float] = (-16.0, 16.0)  # [m] grid extent left (y)
    bev_cell_m: float = Field(4.0, gt=0)  # [m] cell length along x (and width if square)
    bev_cell_y_m: float | None = Field(None, gt=0)  # [m] cell width along y; None: square
    bev_classes: tuple[str, ...] = ("vehicle", "pedestrian", "static")
    # How cells get image features (agent/model/bev_lift.py): "attention" = a learned query
    # per cell cross-attends to all visual tokens (the head learns the camera geometry);
    # "camera" = each cell samples the front camera's feature map where its points at
    # `lift_heights_m` project (the geometry is given; Simple-BEV / OFT-style lifting), and
    # cells the camera cannot see are neither trained nor ever reported occupied.
    lift: Literal["attention", "camera"] = "attention"
    # The front camera the "camera" lift projects into (sim.sensors.default_front_camera):
    # mount [m] in the vehicle frame (x forward, z up), horizontal field of view [deg].
    camera_x_m: float = 1.3
    camera_z_m: float = 2.3
    camera_fov_deg: float = Field(100.0, gt=0.0, lt=180.0)
    lift_heights_m: tuple[float, ...] = (0.0, 1.0)  # [m] above the road, sampled per cell
    lift_dim: int = Field(64, ge=8)  # channels of the lifted cell features
    # Also regress, per cell and class, where across the cell its objects lie: the lateral
    # span [y_lo, y_hi] as fractions of the cell's width (`agent.model.losses.bev_spans`).
    # The guard then sees a cone on the lane line as a cone on the lane line, not as the
    # whole 4 m column the ego drives in (agent/safety/perception_view.py).
    bev_span: bool = False
    # A detection head on the same cell features (CenterNet-style, one box per cell and
    # class): per cell, whether a class's object has its centre there, the axis-aligned
    # hull of those objects' footprints and their mean velocity (`agent.model.losses.
    # object_targets`). The guard then plans from boxes with velocities instead of
    # occupied cells (`PerceptionOutputs.objects`). "attention" lift only.
    objects: bool = False
    # A lane head: the lanes beside the route at `agent.data.schema.LANE_STATIONS_M`
    # (`LANE_COLUMNS`: a same-direction lane left, right, an oncoming lane left), as the
    # dataset labels them. The guard's fallback needs them to plan a pass itself.
    lanes: bool = False

    @model_validator(mode="after")
    def _objects_need_cells(self) -> PerceptionConfig:
        if self.objects and self.lift != "attention":
            raise ValueError("objects: the detection head needs lift 'attention'")
        return self

    @property
    def cell_size(self) -> tuple[float, float]:
        """[m] (length along x, width along y) of one cell."""
        return self.bev_cell_m, self.bev_cell_y_m or self.bev_cell_m

    @property
    def bev_shape(self) -> tuple[int, int]:
        """(rows along x, columns along y)."""
        cx, cy = self.cell_size
        rows = round((self.bev_x_m[1] - self.bev_x_m[0]) / cx)
        cols = round((self.bev_y_m[1] - self.bev_y_m[0]) / cy)
        return rows, cols

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """[m] (x of each row's centre (rows,), y of each column's centre (cols,)): row r
        covers x from bev_x_m[0] + r * length, column c covers y from bev_y_m[0] + c * width."""
        (cx, cy), (rows, cols) = self.cell_size, self.bev_shape
        return (
            self.bev_x_m[0] + cx * (np.arange(rows) + 0.5),
            self.bev_y_m[0] + cy * (np.arange(cols) + 0.5),
        )


class PlannerConfig(_Strict):
    """Truncated diffusion over k-means anchors (DiffusionDrive)."""

    num_modes: int = Field(20, ge=1)  # K anchors
    num_poses: int = Field(HORIZON_POSES, ge=2)  # T poses, 0.5 s apart
    train_timesteps: int = Field(1000, ge=10)  # DDIM schedule length
    train_max_t: int = Field(50, ge=1)  # training noise levels t ~ U[0, train_max_t)
    infer_t: int = Field(8, ge=1)  # anchors are noised to this timestep at inference
    denoise_steps: int = Field(2, ge=1)
    decoder_layers: int = Field(2, ge=1)  # cascade layers, each refines the last
    x_offset_m: float = 20.0  # [m] trajectory normalisation: (x - offset) / scale
    x_scale_m: float = 25.0  # [m]
    y_scale_m: float = 8.0  # [m]

    @model_validator(mode="after")
    def _t(self) -> PlannerConfig:
        if self.infer_t >= self.train_timesteps:
            raise ValueError("infer_t must be < train_timesteps")
        return self


class ModelConfig(_Strict):
    d_model: int = Field(128, ge=16)  # token width everywhere
    heads: int = Field(4, ge=1)
    reasoning_dim: int = Field(128, ge=1)  # E: the VLM embedding that conditions the planner
    reasoning_dropout: float = Field(0.2, ge=0.0, le=1.0)  # train without reasoning this often
    encoder: EncoderConfig = EncoderConfig()
    perception: PerceptionConfig = PerceptionConfig()
    planner: PlannerConfig = PlannerConfig()
    num_flags: int = len(FLAGS)
    num_intents: int = len(INTENTS)
    num_light_states: int = len(LIGHT_STATES)
    num_commands: int = 7  # RoadOption values 0..6 (sim.env.command_index)

    @model_validator(mode="after")
    def _heads(self) -> ModelConfig:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        return self
