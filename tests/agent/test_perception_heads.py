"""The detection and lane heads the safety guard plans from: their targets and decoding,
their losses (lane rows without labels masked out), adding them to a trained checkpoint,
training with datasets that have lane labels and ones that do not, and their outputs
reaching the guard's inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_model import SMALL, batch, make_model
from test_training import config, write_dataset

from agent.data.schema import LANE_COLUMNS, LANE_STATIONS_M
from agent.model.checkpoint import CheckpointError, load_drive_model, save_drive_model
from agent.model.config import PerceptionConfig
from agent.model.drive_model import OBJECT_CHANNELS
from agent.model.losses import LossWeights, compute_losses
from agent.model.objects import decode_objects, object_targets
from agent.training.config import TrainConfig
from agent.training.trainer import Trainer, load_arrays

GRID = PerceptionConfig()  # 4 m cells, x in [-8, 56), y in [-16, 16)
HEADS = SMALL.model_copy(
    update={"perception": SMALL.perception.model_copy(update={"objects": True, "lanes": True})}
)

# x, y, yaw, vx, vy, length, width, kind
CAR = [20.5, 1.0, 0.0, 5.0, 0.0, 4.5, 2.0, 0]
CONE_A = [30.5, -5.5, 0.0, 0.0, 0.0, 0.5, 0.5, 2]
CONE_B = [31.5, -6.5, 0.0, 1.0, 0.0, 0.5, 0.5, 2]  # same 4 m cell as CONE_A
TURNED = [44.0, 10.0, np.pi / 2, 0.0, 3.0, 4.0, 2.0, 0]  # yawed 90 deg: 2 m long, 4 m wide
BEHIND = [-20.0, 0.0, 0.0, 0.0, 0.0, 4.5, 2.0, 0]  # off the grid


def rows(*obstacles: list[float], masked: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, M, 8) obstacle rows and their mask; the last `masked` rows are masked out."""
    table = torch.tensor([obstacles], dtype=torch.float32)
    mask = torch.ones(1, len(obstacles), dtype=torch.bool)
    if masked:
        mask[0, -masked:] = False
    return table, mask


def perfect_logits(centre: torch.Tensor, boxes: torch.Tensor) -> np.ndarray:
    """The head's output that reproduces the targets exactly: (classes, 7, R, C)."""
    logit = torch.where(centre > 0, 20.0, -20.0)[:, :, None]
    return torch.cat([logit, boxes], dim=2)[0].numpy()


def test_targets_decode_to_each_cells_hull_and_mean_velocity() -> None:
    centre, boxes = object_targets(GRID, *rows(CAR, CONE_A, CONE_B, TURNED, BEHIND))
    assert centre.shape == (1, 3, *GRID.bev_shape)
    assert boxes.shape == (1, 3, OBJECT_CHANNELS - 1, *GRID.bev_shape)
    # one vehicle cell each for the car and the turned car, one static cell for both cones
    assert centre[0, 0].sum() == 2 and centre[0, 1].sum() == 0 and centre[0, 2].sum() == 1
    assert centre[0, 0, 7, 4] == 1  # the car: x 20.5 -> row 7, y 1.0 -> column 4
    assert (boxes * (1 - centre[:, :, None])).abs().sum() == 0  # no box where no centre

    xy, size, velocity, kinds, ids, prob = decode_objects(perfect_logits(centre, boxes), GRID, 0.5)
    found = {
        kind_xy: i for i, kind_xy in enumerate(zip(kinds, map(tuple, xy.round(3)), strict=True))
    }
    car = found[("vehicle", (20.5, 1.0))]
    np.testing.assert_allclose(size[car], [4.5, 2.0], atol=1e-5)
    np.testing.assert_allclose(velocity[car], [5.0, 0.0], atol=1e-5)
    cones = found[("static", (31.0, -6.0))]  # the hull of both cones
    np.testing.assert_allclose(size[cones], [1.5, 1.5], atol=1e-5)
    np.testing.assert_allclose(velocity[cones], [0.5, 0.0], atol=1e-5)  # their mean
    turned = found[("vehicle", (44.0, 10.0))]
    np.testing.assert_allclose(size[turned], [2.0, 4.0], atol=1e-5)  # axis-aligned hull
    np.testing.assert_allclose(velocity[turned], [0.0, 3.0], atol=1e-5)
    assert len(kinds) == 3 and (prob > 0.99).all()
    assert len(set(ids.tolist())) == 3  # the cells' flat indices

    # masked rows and objects off the grid make no target
    centre, _ = object_targets(GRID, *rows(CAR, CONE_A, masked=1))
    assert centre.sum() == 1
    # below the threshold nothing is decoded; a wrong shape is named
    unsure = perfect_logits(centre, boxes)
    unsure[:, 0] = 0.0  # probability 0.5 everywhere
    assert decode_objects(unsure, GRID, 0.6)[3] == ()
    assert len(decode_objects(unsure, GRID, 0.5)[3]) == unsure[:, 0].size
    with pytest.raises(ValueError, match="object logits must be"):
        decode_objects(np.zeros((3, OBJECT_CHANNELS, 2, 2)), GRID, 0.5)


def test_object_head_needs_the_attention_cells() -> None:
    with pytest.raises(ValueError, match="lift 'attention'"):
        PerceptionConfig(objects=True, lift="camera")


def lane_batch(model, known: list[bool], seed: int = 0):
    x, t = batch(model, b=len(known), seed=seed)
    g = torch.Generator().manual_seed(seed)
    lanes = torch.rand(len(known), len(LANE_STATIONS_M), len(LANE_COLUMNS), generator=g) > 0.5
    from dataclasses import replace

    return x, replace(t, lanes=lanes.float(), lanes_known=torch.tensor(known))


def test_heads_shapes_losses_and_masked_lane_rows() -> None:
    model = make_model(HEADS)
    x, t = lane_batch(model, [True, True, False, False])
    out = model(x)
    classes, (r, c) = len(HEADS.perception.bev_classes), HEADS.perception.bev_shape
    assert out.object_logits.shape == (4, classes, OBJECT_CHANNELS, r, c)
    assert out.lane_logits.shape == (4, len(LANE_STATIONS_M), len(LANE_COLUMNS))
    terms = compute_losses(model, out, t, LossWeights())
    for name in ("object_centre", "object_box", "object_velocity", "lanes"):
        assert torch.isfinite(terms[name]) and terms[name] > 0, name
    # rows without lane labels do not count: flipping their labels changes nothing
    from dataclasses import replace

    flipped = t.lanes.clone()
    flipped[2:] = 1 - flipped[2:]
    again = compute_losses(model, out, replace(t, lanes=flipped), LossWeights())
    assert torch.equal(again["lanes"], terms["lanes"])
    none_known = compute_losses(
        model, out, replace(t, lanes_known=torch.zeros(4, dtype=torch.bool)), LossWeights()
    )
    assert none_known["lanes"] == 0
    with pytest.raises(ValueError, match="no lane labels"):
        compute_losses(model, out, replace(t, lanes=None), LossWeights())


def test_a_few_steps_reduce_the_object_and_lane_losses() -> None:
    model = make_model(HEADS)
    x, t = lane_batch(model, [True] * 4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    names = ("object_centre", "object_box", "lanes")
    first = None
    for _ in range(30):
        terms = compute_losses(model, model(x), t, LossWeights())
        first = first or {k: float(terms[k].detach()) for k in names}
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
    for k in names:
        assert float(terms[k].detach()) < 0.7 * first[k], k


def test_heads_are_added_to_a_checkpoint_and_nothing_else_changes(tmp_path: Path) -> None:
    base = make_model()
    save_drive_model(base, tmp_path)
    cfg = HEADS.model_copy(update={"planner": base.cfg.planner})
    grown, _ = load_drive_model(tmp_path, cfg)
    assert grown.lanes is not None and grown.perception.objects is not None
    mine = grown.state_dict()
    for k, v in base.state_dict().items():
        assert torch.equal(mine[k], v), k
    with pytest.raises(CheckpointError, match=r"differs in \['d_model'"):
        load_drive_model(tmp_path, cfg.model_copy(update={"d_model": 64}))
    # a checkpoint that has a head loads strictly: a missing head weight is an error
    save_drive_model(grown, tmp_path / "grown")
    weights = tmp_path / "grown" / "model.safetensors"
    from safetensors.torch import load_file, save_file

    state = {k: v for k, v in load_file(str(weights)).items() if not k.startswith("lanes.")}
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match="missing"):
        load_drive_model(tmp_path / "grown")


def with_lanes(path: Path) -> None:
    """Give a synthetic dataset lane labels: a left lane on its bright (day) frames."""
    shard = path / "shard-00000.npz"
    data = dict(np.load(shard))
    day = data["speed_mps"] > 7
    lanes = np.zeros((len(day), len(LANE_STATIONS_M), len(LANE_COLUMNS)), bool)
    lanes[day, :, 0] = True
    np.savez_compressed(shard, **data, lanes=lanes)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> tuple[Path, dict, dict]:
    """A tiny checkpoint, then a fine-tune of it that adds both heads, on one dataset with
    lane labels and one without: (its directory, its training summary, its config)."""
    tmp = tmp_path_factory.mktemp("heads")
    write_dataset(tmp / "data")
    write_dataset(tmp / "more", seed=1)  # collected before the lanes field
    with_lanes(tmp / "data")
    base = config(tmp, vlm=1, frozen=2)
    Trainer(TrainConfig.model_validate(base), progress=False).run()
    init = tmp / "ckpt"
    tune = base | {
        "init": str(init),
        "model": base["model"] | {"perception": {"objects": True, "lanes": True}},
        "data": {"train": str(tmp / "data"), "extra": [str(tmp / "more")]},
        "out": str(tmp / "tuned"),
        "run_dir": str(tmp / "run-tune"),
        "vlm": {"init": str(init / "vlm"), "image_size": 32, "vocab_size": 300},
        "stages": [{"name": "frozen", "steps": 2, "batch_size": 4}],
    }
    summary = Trainer(TrainConfig.model_validate(tune), progress=False).run()
    return tmp / "tuned", summary, tune


def test_fine_tune_adds_the_heads_and_trains_lanes_only_where_labelled(tuned) -> None:
    directory, summary, tune = tuned
    data, more = Path(tune["data"]["train"]), Path(tune["data"]["extra"][0])
    arrays = load_arrays(data, 2, 1, extra=(more,))
    n = len(arrays) // 2
    assert arrays.data["lanes_known"].tolist() == [True] * n + [False] * n
    assert not arrays.data["lanes"][n:].any()

    assert {"object_centre", "object_box", "object_velocity", "lanes"} <= set(summary["frozen"])
    model, _ = load_drive_model(directory)
    assert model.cfg.perception.objects and model.cfg.perception.lanes

    # a lane head with no lane labels anywhere is refused, naming the datasets
    unlabelled = tune | {"data": {"train": str(more)}}
    with pytest.raises(ValueError, match=r"perception.lanes: none of the training data \(.*more"):
        Trainer(TrainConfig.model_validate(unlabelled), progress=False).run()
    # other model differences from the init checkpoint are still errors
    wrong = tune | {"model": tune["model"] | {"d_model": 64}}
    with pytest.raises(ValueError, match=r"differs from .*\['d_model'\]"):
        Trainer(TrainConfig.model_validate(wrong), progress=False)


def test_training_only_the_added_heads_leaves_the_rest_of_the_checkpoint_exact(
    tuned, tmp_path: Path
) -> None:
    """configs/tiny_heads_frozen.yaml's recipe: the heads learn on the checkpoint's frozen
    features, so the encoder, the grid, the light head and the planner (buffers included:
    the frozen parts stay in eval mode) are the init checkpoint's, bit for bit."""
    _, _, tune = tuned
    only_heads = tune | {
        "out": str(tmp_path / "heads"),
        "run_dir": str(tmp_path / "run"),
        "stages": [
            {
                "name": "frozen",
                "steps": 3,
                "batch_size": 4,
                "lr": 1e-2,
                "trainable": ["perception.objects.*", "lanes.*"],
            }
        ],
    }
    Trainer(TrainConfig.model_validate(only_heads), progress=False).run()
    init, _ = load_drive_model(Path(tune["init"]))
    heads, _ = load_drive_model(tmp_path / "heads")
    before, after = init.state_dict(), heads.state_dict()
    added = set(after) - set(before)
    assert added and all(k.startswith(("perception.objects.", "lanes.")) for k in added)
    for k, v in before.items():
        assert torch.equal(after[k], v), k


@pytest.mark.parametrize("perception", ["model", "model_grid"])
def test_the_agent_hands_the_heads_to_the_guard_unless_told_not_to(
    tuned, tmp_path: Path, perception: str
) -> None:
    from test_leaderboard_agent import Route, agent_config

    cfg = agent_config(tmp_path, tuned[0], safety={"enabled": True, "perception": perception})
    route = Route(cfg)  # no simulator registered: model_grid runs anywhere
    seen: list = []
    check = route.agent.guard.check
    route.agent.guard.check = lambda inputs: seen.append(inputs) or check(inputs)
    try:
        for _ in range(3):
            route.tick()
    finally:
        route.close()
    got = seen[-1].perception
    if perception == "model":
        assert got.objects is not None
        assert got.lanes is not None and got.lanes.shape == (
            len(LANE_STATIONS_M),
            len(LANE_COLUMNS),
        )
    else:
        assert got.objects is None and got.lanes is None


def test_the_agent_config_sets_the_detection_threshold(tuned, tmp_path: Path) -> None:
    """`object_threshold` reaches the boxes the guard sees: near 0 every cell and class
    holds a box, near 1 none does."""
    from test_leaderboard_agent import Route, agent_config

    counts = []
    for threshold in (1e-6, 1 - 1e-6):
        cfg = agent_config(tmp_path, tuned[0], object_threshold=threshold)
        route = Route(cfg)
        seen: list = []
        check = route.agent.guard.check
        route.agent.guard.check = lambda inputs, seen=seen, check=check: (
            seen.append(inputs) or check(inputs)
        )
        try:
            route.tick()
        finally:
            route.close()
        counts.append(len(seen[-1].perception.objects.kind))
    classes, (rows, cols) = len(GRID.bev_classes), GRID.bev_shape
    assert counts == [classes * rows * cols, 0]


def test_the_heads_outputs_reach_the_guard(tmp_path: Path) -> None:
    from agent.leaderboard_agent import guard_inputs
    from agent.model_agent import ModelStep, perceived_objects

    model = make_model(HEADS).eval()
    save_drive_model(model, tmp_path)
    loaded, _ = load_drive_model(tmp_path)
    x, _ = batch(loaded, b=1)
    with torch.no_grad():
        out = loaded(x, sample=True)
    logits = out.object_logits[0].numpy().copy()
    logits[:, 0] = -20.0
    logits[0, 0, 3, 1] = 20.0  # one vehicle cell
    objects = perceived_objects(logits, loaded.cfg.perception)
    assert objects.kind == ("vehicle",) and objects.ids.tolist() == [
        np.ravel_multi_index((0, 3, 1), (3, *HEADS.perception.bev_shape))
    ]
    lanes = torch.sigmoid(out.lane_logits[0]).numpy()
    k, t = HEADS.planner.num_modes, HEADS.planner.num_poses
    step = ModelStep(
        trajectory=np.zeros((t, 2)),
        candidates=np.zeros((k, t, 2)),
        scores=np.full(k, 1 / k),
        confidence=0.5,
        bev_probs=np.zeros((3, *HEADS.perception.bev_shape)),
        light_probs=np.array([1.0, 0, 0, 0]),
        flag_probs=np.zeros(HEADS.num_flags, np.float32),
        intent="keep_lane",
        intent_probs=np.zeros(HEADS.num_intents, np.float32),
        target_point=np.array([20.0, 0.0]),
        next_target_point=np.array([40.0, 0.0]),
        objects=objects,
        lane_probs=lanes,
    )
    inputs = guard_inputs(step, None, 5.0, 0.0, HEADS)
    assert inputs.perception.objects is objects
    np.testing.assert_allclose(inputs.perception.lanes, lanes)


def test_open_loop_metrics_of_the_heads() -> None:
    from agent.training.open_loop import lane_metrics, object_metrics

    centre, boxes = object_targets(GRID, *rows(CAR, CONE_A))
    pred = torch.from_numpy(perfect_logits(centre, boxes))[None].repeat(2, 1, 1, 1, 1)
    pred[1, 0, 1:5] += 0.25  # frame 1: the car's hull edges off by a quarter cell (1 m)
    pred[1, 1, 0, 0, 0] = 20.0  # and a pedestrian that is not there
    truth_c, truth_b = centre.repeat(2, 1, 1, 1), boxes.repeat(2, 1, 1, 1, 1)
    m = object_metrics(pred.numpy(), truth_c.numpy(), truth_b.numpy(), GRID)
    assert m["vehicle"]["precision"] == 1.0 and m["vehicle"]["recall"] == 1.0
    assert m["vehicle"]["edge_mae_m"] == pytest.approx(0.5)  # 1 m on half the frames
    assert m["static"]["edge_mae_m"] == 0.0 and m["static"]["velocity_mae_mps"] == 0.0
    assert m["pedestrian"]["precision"] == 0.0 and m["pedestrian"]["recall"] is None
    # a centre one cell off misses the cell metrics and counts within one cell
    shifted = pred.clone()
    shifted[:, 0] = torch.roll(pred[:, 0], 1, dims=-1)
    near = object_metrics(shifted.numpy(), truth_c.numpy(), truth_b.numpy(), GRID)
    assert near["vehicle"]["recall"] == 0.0 and near["vehicle"]["recall_1cell"] == 1.0
    assert near["vehicle"]["precision_1cell"] == 1.0

    lanes = np.zeros((4, len(LANE_STATIONS_M), len(LANE_COLUMNS)), bool)
    lanes[:3, :, 0] = True  # left_same on 3 of 4 frames
    prob = np.where(lanes, 0.9, 0.1)
    prob[3, :, 0] = 0.8  # one false left lane
    lm = lane_metrics(prob, lanes)
    assert lm["left_same"]["accuracy"] == 0.75 and lm["left_same"]["majority_accuracy"] == 0.75
    assert lm["left_same"]["precision"] == 0.75 and lm["left_same"]["recall"] == 1.0
    assert lm["right_same"]["accuracy"] == 1.0 and lm["right_same"]["recall"] is None

    # the model card shows both tables, and nothing for a model without the heads
    from agent.training.card import _lane_lines, _object_lines

    card = "\n".join(_object_lines(near) + _lane_lines(lm))
    assert "| vehicle | 0.0 | 0.0 | 1.0 / 1.0 | 2 |" in card
    assert "| left_same | 0.75 | 0.75 | 0.75 | 1.0 |" in card
    assert _object_lines(None) == [] and _lane_lines(None) == []


def test_cells_no_detection_explains_stay_in_the_view_when_asked() -> None:
    from agent.safety.perception_view import (
        PerceivedObjects,
        PerceptionOutputs,
        PerceptionViewConfig,
        view_from_perception,
    )

    occupancy = np.zeros((3, *GRID.bev_shape))
    occupancy[0, 7, 4] = 1.0  # a vehicle cell the detection explains (x 20, y 2)
    occupancy[2, 9, 2] = 1.0  # a static cell it missed (x 28, y -6)
    occupancy[2, 7, 3] = 1.0  # a static cell under the car: another class, kept
    car = PerceivedObjects(
        xy=np.array([[20.5, 1.0]]),
        size=np.array([[4.5, 2.0]]),
        yaw=np.zeros(1),
        velocity=np.array([[5.0, 0.0]]),
        kind=("vehicle",),
        ids=np.array([7 * 8 + 4]),
    )
    light = np.array([1.0, 0.0, 0.0, 0.0])
    outputs = PerceptionOutputs(occupancy, light, np.zeros(11), objects=car)
    route = np.array([[0.0, 0.0], [80.0, 0.0]])
    replace = view_from_perception(outputs, 5.0, route, PerceptionViewConfig(), GRID)
    assert replace.obstacle_kind == ("vehicle",)
    config = PerceptionViewConfig(object_cells="uncovered")
    merged = view_from_perception(outputs, 5.0, route, config, GRID)
    assert merged.obstacle_kind == ("vehicle", "static", "static")
    np.testing.assert_allclose(merged.obstacle_xy[0], [20.5, 1.0])
    np.testing.assert_allclose(merged.obstacle_velocity[1:], 0.0)
    assert len(set(merged.obstacle_id.tolist())) == 3  # cell ids do not clash with objects'


def test_perception_pictures_draw_labels_and_detections_where_they_are(tuned, tmp_path) -> None:
    from typer.testing import CliRunner

    from agent.training.perception_pictures import (
        GREEN,
        KIND_COLOURS,
        PX_PER_M,
        pick_frames,
        render_tile,
    )
    from vlmdrive.cli import app

    grid = GRID
    centre, boxes = object_targets(grid, *rows(CAR))

    def bev(detections: np.ndarray | None) -> np.ndarray:
        tile = render_tile(
            np.zeros((128, 256, 3), np.uint8),
            np.array([CAR], np.float32),
            grid,
            np.zeros((3, *grid.bev_shape)),
            detections,
            title="car",
        )
        return tile[-64 * PX_PER_M :]  # the bird's-eye view below the camera and the text

    # the car's left edge (y 2.0 m) at its centre (x 20.5 m): the label's outline, and the
    # detection's drawn over it
    col, row = round((16 - 2.0) * PX_PER_M), round((56 - 20.5) * PX_PER_M)
    labels_only = bev(None)
    assert labels_only.shape[:2] == (64 * PX_PER_M, 32 * PX_PER_M)
    edge = labels_only[row - 3 : row + 4, col - 1 : col + 2].reshape(-1, 3)
    assert (edge == GREEN).all(1).any()
    assert not (labels_only[:, : 10 * PX_PER_M] == GREEN).all(-1).any()  # nothing 6 m+ left
    both = bev(perfect_logits(centre, boxes))
    edge = both[row - 3 : row + 4, col - 1 : col + 2].reshape(-1, 3)
    assert (edge == KIND_COLOURS["vehicle"]).all(1).any()

    # frames with something ahead on the grid, one per episode
    table = np.zeros((4, 2, 8), np.float32)
    table[1, :, 0] = [10.0, 20.0]
    table[3, :, 0] = [10.0, 90.0]  # one of them beyond the grid
    picked = pick_frames(table, np.ones((4, 2), bool), np.array([0, 0, 1, 1]), grid, 2)
    assert picked.tolist() == [1]

    checkpoint, _, tune = tuned
    out = tmp_path / "heads.png"
    cli = CliRunner()
    args = ["draw-perception", "--checkpoint", str(checkpoint), "--data", tune["data"]["train"]]
    result = cli.invoke(app, [*args, "--out", str(out), "--frames", "2"])
    assert result.exit_code == 0, result.output
    import cv2

    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[1] == 2 * (32 * PX_PER_M + 2)
    bad = cli.invoke(app, [*args, "--out", str(tmp_path / "heads.jpg")])
    assert bad.exit_code != 0 and "ending in .png" in bad.output
