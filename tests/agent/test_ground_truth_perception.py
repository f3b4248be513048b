"""The agent's ablations on the embedded simulator: the guard's ground-truth perception
(perfect heads: what it marks on a construction route, the setting that turns it on;
exact object boxes in place of grid cells; the expert's whole view) and the expert
planner (the guard checks the rules' plan); all refused where no embedded simulator is
registered."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from test_leaderboard_agent import agent_config, checkpoint  # noqa: F401 (fixture)

from agent.data.labels import lane_labels
from agent.data.schema import FLAGS, INTENTS, LIGHT_STATES
from agent.expert import ExpertDriver
from agent.leaderboard_agent import VLMDriveAgent
from agent.model.config import PerceptionConfig
from agent.safety.ground_truth_perception import GroundTruthPerception
from agent.safety.perception_view import (
    PerceivedObjects,
    PerceptionOutputs,
    PerceptionViewConfig,
    view_from_perception,
)
from scenarios.compile import compile_scenario
from scenarios.loader import load_scenario
from scenarios.sampler import sample
from sim.control import VehicleControl
from sim.data_provider import DataProvider
from sim.evaluate import agent_global_plan
from sim.geometry import world_to_ego
from sim.lite.world import LiteSimulator

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios/library/train/construction_left_clear.yaml"


def _simulator() -> LiteSimulator:
    sim = LiteSimulator()
    spec = compile_scenario(sample(load_scenario(SCENARIO), n=1)[0], str(SCENARIO))
    sim.reset(spec, 0)
    return sim


def _ego_frame(sim: LiteSimulator, x: float, y: float) -> tuple[float, float]:
    """World (x, y) in the ego frame (x forward, y left)."""
    ego = sim.ground_truth().ego
    forward, left = world_to_ego(np.array([x, y]), np.array([ego.x, ego.y]), ego.yaw)
    return float(forward), float(left)


def test_props_fill_their_cells_and_the_flags_are_the_labels() -> None:
    sim = _simulator()
    grid = PerceptionConfig()
    perception = GroundTruthPerception(grid)
    static = grid.bev_classes.index("static")
    xs, ys = grid.cell_centres()
    length, width = grid.cell_size
    seen_construction = False
    props_checked = 0
    expert = ExpertDriver()  # drives the route up to and past its construction zone
    control = VehicleControl()
    for tick in range(800):
        sim.tick(control)
        control = expert.step(sim)
        if tick % 20:
            continue
        assert expert.last_seen is not None  # this tick's, from step()
        out = perception.outputs(expert.last_seen)
        assert set(np.unique(out.occupancy)) <= {0.0, 1.0}
        assert out.light.sum() == 1.0 and out.light.shape == (len(LIGHT_STATES),)
        assert out.intent is not None and out.intent.sum() == 1.0
        assert out.intent.shape == (len(INTENTS),) and out.span is None
        # Every prop inside the grid (away from cell borders) fills its own cell.
        for prop in sim.ground_truth().props:
            px, py = _ego_frame(sim, prop.x, prop.y)
            r, c = np.argmin(np.abs(xs - px)), np.argmin(np.abs(ys - py))
            if abs(xs[r] - px) < length / 2 - 0.5 and abs(ys[c] - py) < width / 2 - 0.5:
                assert out.occupancy[static, r, c] == 1.0, (tick, prop.type_id, px, py)
                props_checked += 1
        flags = dict(zip(FLAGS, out.flags, strict=True))
        seen_construction |= flags["construction"] == 1.0
        assert flags["rain"] == 0.0 and flags["fog"] == 0.0  # a clear day
    assert seen_construction  # the route drives up to its construction zone
    assert props_checked >= 5


@contextmanager
def _agent_on(sim: LiteSimulator, cfg: Path) -> Iterator[tuple[VLMDriveAgent, list]]:
    """The agent set up on `sim` with the simulator registered (as `vlmdrive eval` does),
    and the list every tick's guard inputs are appended to."""
    agent = VLMDriveAgent("localhost", 2000, False)
    agent.set_global_plan(*agent_global_plan(agent, sim))
    DataProvider.set_simulator(sim)
    try:
        agent.setup(str(cfg))
        sim.setup_sensors(agent.sensors())
        seen: list = []
        check = agent.guard.check
        agent.guard.check = lambda inputs: seen.append(inputs) or check(inputs)
        yield agent, seen
    finally:
        DataProvider.set_simulator(None)
        agent.destroy()
        sim.close()


def test_the_guard_reads_ground_truth_when_asked(checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    sim = _simulator()
    cfg = agent_config(tmp_path, checkpoint, safety={"enabled": True, "perception": "ground_truth"})
    with _agent_on(sim, cfg) as (agent, seen):
        reference = ExpertDriver()  # an expert observing the same ticks
        perception = GroundTruthPerception(agent.driver.model.cfg.perception)
        control = VehicleControl()
        for _ in range(3):
            data = sim.tick(control)
            expected = perception.outputs(reference.observe(sim))
            control = VehicleControl.sanitized(agent.run_step(data, sim.time_s))
            got = seen[-1].perception
            np.testing.assert_array_equal(got.occupancy, expected.occupancy)
            np.testing.assert_array_equal(got.flags, expected.flags)
            np.testing.assert_array_equal(got.light, expected.light)
        # The planner still drives from the model: the trajectory is the model's.
        assert seen[-1].trajectory.shape == (agent.num_poses, 2)


@pytest.mark.parametrize(
    ("safety", "message"),
    [
        ({"enabled": True, "perception": "ground_truth"}, "none is registered"),
        ({"enabled": True, "perception": "ground_truth_boxes"}, "none is registered"),
        ({"enabled": True, "perception": "ground_truth_view"}, "none is registered"),
        ({"enabled": False, "perception": "ground_truth"}, "safety.enabled is false"),
    ],
)
def test_ground_truth_perception_is_refused_where_it_cannot_run(
    checkpoint: Path,  # noqa: F811
    tmp_path: Path,
    safety: dict,
    message: str,
) -> None:
    DataProvider.set_simulator(None)  # as in CARLA: no ground truth
    agent = VLMDriveAgent("localhost", 2000, False)
    cfg = agent_config(tmp_path, checkpoint, safety=safety)
    with pytest.raises(ValueError, match="safety.perception: ground_truth") as info:
        agent.setup(str(cfg))
    assert message in str(info.value) and str(cfg) in str(info.value)


def test_spans_on_request_say_where_across_the_cell_a_prop_lies() -> None:
    sim = _simulator()
    grid = PerceptionConfig()
    static = grid.bev_classes.index("static")
    xs, ys = grid.cell_centres()
    width = grid.cell_size[1]
    expert, control = ExpertDriver(), VehicleControl()
    perception = GroundTruthPerception(grid, spans=True)
    checked = 0
    for tick in range(800):
        sim.tick(control)
        control = expert.step(sim)
        if tick % 20:
            continue
        assert expert.last_seen is not None
        out = perception.outputs(expert.last_seen)
        assert out.span is not None and out.span.shape == (3, 2, *grid.bev_shape)
        for prop in sim.ground_truth().props:
            px, py = _ego_frame(sim, prop.x, prop.y)
            r, c = np.argmin(np.abs(xs - px)), np.argmin(np.abs(ys - py))
            if abs(xs[r] - px) > 1.5 or abs(ys[c] - py) > 1.5:
                continue
            lo, hi = out.span[static, :, r, c]
            # The span's fractions of the cell's width (0 = its right edge) hold the prop.
            right = ys[c] - width / 2
            assert right + lo * width - 0.05 <= py <= right + hi * width + 0.05
            checked += 1
    assert checked >= 5


def test_the_expert_planner_ablation_hands_the_guard_the_rules_plan(
    checkpoint: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """`planner: expert`: the guard checks the expert's plan of the tick (at full
    confidence), while the model still runs for its perception."""
    sim = _simulator()
    cfg = agent_config(tmp_path, checkpoint, planner="expert")
    with _agent_on(sim, cfg) as (agent, seen):
        reference = ExpertDriver()  # an expert observing the same ticks
        control = VehicleControl()
        for _ in range(30):
            data = sim.tick(control)
            expected = reference.observe(sim).plan.trajectory
            control = VehicleControl.sanitized(agent.run_step(data, sim.time_s))
            np.testing.assert_allclose(seen[-1].trajectory, expected[: agent.num_poses])
            assert seen[-1].confidence == 1.0
            assert seen[-1].perception.occupancy.max() < 1.0 + 1e-9  # the model's heads
    DataProvider.set_simulator(None)
    with pytest.raises(ValueError, match="planner: expert reads the embedded simulator"):
        VLMDriveAgent("localhost", 2000, False).setup(str(cfg))


def test_boxes_are_the_expert_views_obstacles_on_the_grid_and_replace_the_cells() -> None:
    """`boxes=True`: the expert's obstacles whose centres lie on the grid, exactly (ids,
    boxes, velocities); the guard's view built from such outputs holds those boxes, not
    boxes at cell centres."""
    sim = _simulator()
    grid = PerceptionConfig()
    (x_lo, x_hi), (y_lo, y_hi) = grid.bev_x_m, grid.bev_y_m
    perception = GroundTruthPerception(grid, boxes=True)
    expert, control = ExpertDriver(), VehicleControl()
    props_seen = moving_seen = 0
    for tick in range(800):
        sim.tick(control)
        control = expert.step(sim)
        if tick % 20:
            continue
        seen = expert.last_seen
        assert seen is not None
        objects = perception.outputs(seen).objects
        assert objects is not None
        view = seen.view
        on_grid = [
            i for i, (x, y) in enumerate(view.obstacle_xy) if x_lo <= x < x_hi and y_lo <= y < y_hi
        ]
        np.testing.assert_array_equal(objects.ids, view.obstacle_id[on_grid])
        np.testing.assert_array_equal(objects.xy, view.obstacle_xy[on_grid])
        np.testing.assert_array_equal(objects.size, view.obstacle_size[on_grid])
        np.testing.assert_array_equal(objects.velocity, view.obstacle_velocity[on_grid])
        assert objects.kind == tuple(view.obstacle_kind[i] for i in on_grid)
        props_seen += objects.kind.count("static")
        moving_seen += int((np.hypot(*objects.velocity.T) > 1.0).sum())
        guard_view = view_from_perception(
            perception.outputs(seen), seen.gt.ego.speed, view.route_xy, grid=grid
        )
        np.testing.assert_array_equal(guard_view.obstacle_xy, objects.xy)
        np.testing.assert_array_equal(guard_view.obstacle_velocity, objects.velocity)
        np.testing.assert_array_equal(guard_view.obstacle_yaw, objects.yaw)
        assert guard_view.obstacle_kind == objects.kind
        assert not guard_view.left_opposite.any()  # lanes stay unperceived
    assert props_seen >= 5 and moving_seen >= 1  # the cones, and traffic that moves


def test_perceived_objects_check_their_shapes_and_kinds() -> None:
    with pytest.raises(ValueError, match=r"PerceivedObjects.velocity must be \(1, 2\)"):
        PerceivedObjects(
            xy=np.zeros((1, 2)),
            size=np.ones((1, 2)),
            yaw=np.zeros(1),
            velocity=np.zeros(2),
            kind=("vehicle",),
            ids=np.zeros(1),
        )
    with pytest.raises(ValueError, match="unknown kinds"):
        PerceivedObjects(
            np.zeros((1, 2)), np.ones((1, 2)), np.zeros(1), np.zeros((1, 2)), ("cat",), np.zeros(1)
        )


@pytest.mark.parametrize(
    "mode", ["ground_truth_boxes", "ground_truth_boxes_lanes", "ground_truth_view"]
)
def test_the_guard_checks_against_ground_truth_objects_when_asked(
    checkpoint: Path,  # noqa: F811
    tmp_path: Path,
    mode: str,
) -> None:
    """`ground_truth_boxes`: the guard's view holds the perfect boxes and no cell boxes;
    `ground_truth_view`: the guard checks against the expert's own view of the tick, its
    lanes and route included."""
    sim = _simulator()
    cfg = agent_config(tmp_path, checkpoint, safety={"enabled": True, "perception": mode})
    with _agent_on(sim, cfg) as (agent, seen):
        reference = ExpertDriver()  # an expert observing the same ticks
        assert agent.guard is not None
        control = VehicleControl()
        for _ in range(3):
            data = sim.tick(control)
            expected = reference.observe(sim).view
            control = VehicleControl.sanitized(agent.run_step(data, sim.time_s))
            inputs, view = seen[-1], agent.guard.last_view
            assert view is not None
            if mode == "ground_truth_view":
                assert inputs.view is view  # checked as handed over, nothing added
                np.testing.assert_array_equal(view.route_xy, expected.route_xy)
                np.testing.assert_array_equal(view.obstacle_id, expected.obstacle_id)
                np.testing.assert_array_equal(view.left_opposite, expected.left_opposite)
                continue
            objects = inputs.perception.objects
            assert inputs.view is None and objects is not None
            lanes = inputs.perception.lanes
            if mode == "ground_truth_boxes_lanes":  # the labels of the expert's view
                assert lanes is not None
                np.testing.assert_array_equal(lanes, lane_labels(expected))
                assert view.left_same[0] == int(lanes[0, 0])  # the station beside the ego
            else:
                assert lanes is None and not view.left_same.any()
            assert set(objects.ids.tolist()) <= set(expected.obstacle_id.tolist())
            n = len(objects.kind)
            np.testing.assert_array_equal(view.obstacle_xy[:n], objects.xy)
            np.testing.assert_array_equal(view.obstacle_velocity[:n], objects.velocity)
            assert len(view.obstacle_kind) == n  # no cell boxes besides (what they hold:
            # test_boxes_are_the_expert_views_obstacles_on_the_grid_and_replace_the_cells)


def test_perceived_lanes_set_the_view_station_by_station() -> None:
    """Each route point takes the nearest lane station at or before it (0 / 20 / 40 m); a
    lane counts at `lane_threshold` and above; without lanes nothing lies beside the route."""
    grid = PerceptionConfig()
    occupancy = np.zeros((len(grid.bev_classes), *grid.bev_shape))
    heads = {"occupancy": occupancy, "light": np.array([1.0, 0, 0, 0]), "flags": np.zeros(11)}
    route = np.array([[0.0, 0.0], [80.0, 0.0]])
    lanes = np.array([[0.9, 0.0, 0.0], [0.5, 0.2, 0.0], [0.1, 0.0, 0.7]])
    view = view_from_perception(
        PerceptionOutputs(**heads, lanes=lanes), 5.0, route, PerceptionViewConfig(), grid
    )
    s = view.route_s
    np.testing.assert_array_equal(view.left_same, (s < 40.0).astype(np.int64))
    np.testing.assert_array_equal(view.left_opposite, s >= 40.0)
    assert not view.right_same.any()
    plain = view_from_perception(
        PerceptionOutputs(**heads), 5.0, route, PerceptionViewConfig(), grid
    )
    assert not (plain.left_same.any() or plain.right_same.any() or plain.left_opposite.any())
    with pytest.raises(ValueError, match=r"PerceptionOutputs.lanes must be \(3, 3\)"):
        PerceptionOutputs(**heads, lanes=np.zeros(3))
