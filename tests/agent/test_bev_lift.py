"""Camera-geometry BEV lifting (agent/model/bev_lift.py): projection, what the camera sees,
locality of the lifted cells, the loss ignoring unseen cells, save -> load."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_model import batch, make_model

from agent.model.bev_lift import CameraLiftPerception, project_cells, visible_cells
from agent.model.checkpoint import load_drive_model, save_drive_model
from agent.model.config import EncoderConfig, ModelConfig, PerceptionConfig
from agent.model.losses import LossWeights, compute_losses

# configs/tiny_lift.yaml's grid: 2 x 1 m cells, x in [-8, 56], y in [-12.5, 12.5] (32 x 25).
GRID = PerceptionConfig(bev_y_m=(-12.5, 12.5), bev_cell_m=2.0, bev_cell_y_m=1.0, lift="camera")
W, H = 256, 128  # [px] the default front camera (fov 100 deg, x 1.3 m, z 2.3 m)
FOCAL = W / (2 * math.tan(math.radians(50.0)))


def test_cells_project_like_the_simulators_pinhole_camera() -> None:
    uv, seen = project_cells(GRID, W, H)
    xs, ys = GRID.cell_centres()
    r, c = 9, 14  # x = 11 m, y = 2 m (left)
    assert (xs[r], ys[c]) == (11.0, 2.0)
    depth = 11.0 - 1.3
    # Left of the image centre, and the road point below the horizon by z_cam / depth.
    assert uv[r, c, 0] == pytest.approx((W / 2 - FOCAL * 2.0 / depth, H / 2 + FOCAL * 2.3 / depth))
    assert uv[r, c, 1, 1] < uv[r, c, 0, 1]  # the point 1 m up is higher in the image
    assert seen[r, c].all()
    centre = int(np.argmin(np.abs(ys)))
    assert uv[20, centre, 0, 0] == pytest.approx(W / 2)  # straight ahead: the centre column


def test_the_camera_sees_ahead_not_beside_or_behind() -> None:
    seen = visible_cells(GRID, W, H)
    xs, ys = GRID.cell_centres()
    assert not seen[xs < 1.3].any()  # behind the camera
    assert not seen[xs == 3.0].any()  # under the bonnet: below the image's lower edge
    assert seen[xs == 13.0].all()  # 13 m ahead the 100 deg view spans the whole grid
    row5 = seen[xs == 5.0][0]
    assert row5[np.abs(ys) <= 3].all() and not row5[np.abs(ys) >= 8].any()  # a narrow cone


def small_lift_model() -> torch.nn.Module:
    cfg = ModelConfig(
        d_model=32,
        heads=2,
        reasoning_dim=16,
        encoder=EncoderConfig(
            hidden_sizes=(8, 16), depths=(1, 1), image_height=64, image_width=128
        ),
        perception=GRID,
    )
    return make_model(cfg)


def test_lifted_cells_read_the_image_where_they_are_seen() -> None:
    model = small_lift_model()
    head = model.perception
    assert isinstance(head, CameraLiftPerception)
    h, w = head.feature_grid
    tokens = torch.randn(1, 2 * h * w, 32, requires_grad=True)  # history 1: two steps
    bev, light, span, objects = head(tokens, torch.randn(1, 32))
    assert span is None and objects is None  # no span head unless perception.bev_span
    assert bev.shape == (1, 3, 32, 25) and light.shape == (1, model.cfg.num_light_states)
    # Unseen cells are reported free and carry no gradient.
    seen = head.seen
    assert torch.sigmoid(bev[0][:, ~seen]).max() < 1e-6
    # A cell straight ahead, 33 m out, reads only the current frame's tokens near the
    # image centre, around the horizon (and its BEV neighbours' samples).
    bev[0, 0, 20, 12].backward()
    grad = tokens.grad[0].abs().sum(-1)
    assert grad[: h * w].sum() == 0  # the earlier history step: not read
    current = grad[h * w :].reshape(h, w)
    rows, cols = torch.nonzero(current > 0, as_tuple=True)
    assert len(rows) > 0
    assert set(cols.tolist()) <= {w // 2 - 2, w // 2 - 1, w // 2, w // 2 + 1}
    assert set(rows.tolist()) <= {h // 2 - 1, h // 2, h // 2 + 1}


def test_unseen_cells_do_not_enter_the_loss() -> None:
    model = small_lift_model()
    x, t = batch(model, b=2)
    out = model.forward(x, generator=torch.Generator().manual_seed(0))

    def bev_loss(obstacle: list[float] | None) -> float:
        """The BEV loss with sample 0's obstacles replaced by `obstacle` (or none)."""
        obstacles, mask = t.obstacles.clone(), t.obstacle_mask.clone()
        mask[0] = False
        if obstacle is not None:
            obstacles[0, 0], mask[0, 0] = torch.tensor(obstacle), True
        moved = dataclasses.replace(t, obstacles=obstacles, obstacle_mask=mask)
        return compute_losses(model, out, moved, LossWeights())["bev"].item()

    base = bev_loss(None)
    # An obstacle right beside the ego (x = 0, y = 3 m) lies only in cells the camera cannot
    # see: the BEV loss must not change; the same one 20 m ahead must change it.
    assert bev_loss([0.0, 3.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]) == pytest.approx(base, rel=1e-6)
    assert bev_loss([20.0, 3.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]) != pytest.approx(base, rel=1e-6)


def test_a_camera_lift_model_saves_and_loads_identically(tmp_path: Path) -> None:
    model = small_lift_model().eval()
    x, _ = batch(model)
    save_drive_model(model, tmp_path / "ckpt")
    loaded, _ = load_drive_model(tmp_path / "ckpt")
    with torch.no_grad():
        a = model.heads(*model.encoder(x.frames))["bev"]
        b = loaded.heads(*loaded.encoder(x.frames))["bev"]
    torch.testing.assert_close(a, b)
