"""DrivingEnv: the Gymnasium contract on every shipped scenario, spaces, actions, reward
terms on scripted drives, terminations, privileged info, determinism, vector envs."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from scenarios.loader import load_scenario
from sim.data_provider import DataProvider
from sim.env import (
    GENERIC_ENV_ID,
    LIBRARY_ENV_IDS,
    DrivingEnv,
    command_index,
    make_env,
)
from sim.geometry import world_to_ego
from sim.lite.autopilot import RouteFollower
from sim.lite.dynamics import MAX_STEER_ANGLE_RAD, MKZ_WHEELBASE_M
from sim.lite.town import TownSpec
from sim.lite.world import LiteSimulator
from sim.rewards import REWARD_TERMS, RewardConfig
from sim.sensors import SensorSpecError, default_front_camera, default_sensor_suite
from sim.spec import PropSpec, RouteSpec, WorldSpec

SMALL_CAMERA = [default_front_camera(64, 32)]
STRAIGHT_SEED = 2  # small town: the route's first 72 m are one straight lane, no junction
FULL_THROTTLE = np.array([1.0, 0.0, 0.0], np.float32)
BRAKE = np.array([0.0, 0.0, 1.0], np.float32)
DEFAULT_WEIGHTS = RewardConfig.default().weights


def _world(**over) -> WorldSpec:
    params: dict = dict(
        town=TownSpec(blocks_x=2, blocks_y=2),
        route=RouteSpec(length_m=150.0),
        num_vehicles=0,
        num_pedestrians=0,
    )
    params.update(over)
    return WorldSpec(**params)


def _straight_env(**kwargs) -> DrivingEnv:
    """A world with an empty straight start: the simulator seed is pinned."""
    spec = kwargs.pop("spec", None) or _world()
    return DrivingEnv(spec, sensors=SMALL_CAMERA, sim_seeds=(STRAIGHT_SEED,), **kwargs)


# ------------------------------------------------------------------ registry / API
def test_one_registered_id_per_library_scenario() -> None:
    # Every scenario file of both splits, and nothing else: bases (`_*.yaml`) and suite
    # files (`suite*.yaml`) are not scenarios.
    library = Path(__file__).resolve().parents[2] / "scenarios" / "library"
    files = {
        p.resolve()
        for split in ("train", "eval")
        for p in (library / split).glob("*.yaml")
        if not p.name.startswith(("_", "suite"))
    }
    assert len(files) >= 29  # 15 train + 14 eval when this was written
    assert {path.resolve() for path in LIBRARY_ENV_IDS.values()} == files
    assert len(LIBRARY_ENV_IDS) == len(files)
    for env_id, path in LIBRARY_ENV_IDS.items():
        assert env_id in gymnasium.registry
        assert env_id == f"vlmdrive/{load_scenario(path).name}-v0"
    assert GENERIC_ENV_ID in gymnasium.registry


# Town rasterisation dominates a reset (~0.3 s per new town): pinning the variation and
# the simulator seed builds one town per scenario and keeps each check ~1 s.
@pytest.mark.parametrize("env_id", sorted(LIBRARY_ENV_IDS))
def test_check_env_on_every_library_scenario(env_id: str) -> None:
    env = gymnasium.make(env_id, sensors=SMALL_CAMERA, variation=0, sim_seeds=(0,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker's warnings are failures here
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("action_type", ["control", "trajectory"])
def test_check_env_with_fresh_variations(action_type: str) -> None:
    env = make_env(
        LIBRARY_ENV_IDS["vlmdrive/construction_left_clear-v0"],
        sensors=SMALL_CAMERA,
        action_type=action_type,
    )
    check_env(env, skip_render_check=True)
    env.close()


def test_generic_id_takes_any_scenario() -> None:
    env = gymnasium.make(GENERIC_ENV_ID, scenario=_world(), sensors=SMALL_CAMERA)
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space
    assert info["scenario"] == "world"
    env.close()


def test_unknown_backend_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown simulator backend 'carla2'; valid: lite, carla"):
        DrivingEnv(_world(), backend="carla2")


def test_spaces() -> None:
    env = DrivingEnv(_world(), sensors=default_sensor_suite()[:3])
    obs_space = env.observation_space
    assert obs_space["rgb_front"].shape == (128, 256, 4)
    assert obs_space["rgb_front"].dtype == np.uint8
    assert obs_space["gps"].shape == (3,) and obs_space["gps"].dtype == np.float64
    assert obs_space["imu"].shape == (7,) and obs_space["imu"].dtype == np.float64
    assert obs_space["command"].n == 7
    assert obs_space["target_point"].shape == (2,)
    assert env.action_space.shape == (3,)
    np.testing.assert_array_equal(env.action_space.low, [0.0, -1.0, 0.0])
    np.testing.assert_array_equal(env.action_space.high, [1.0, 1.0, 1.0])
    traj = DrivingEnv(_world(), action_type="trajectory", horizon=6)
    assert traj.action_space.shape == (6, 2)


def test_default_observation_is_one_front_camera() -> None:
    env = DrivingEnv(_world())
    assert set(env.observation_space.keys()) == {"rgb_front", "speed", "command", "target_point"}


def test_sensor_id_colliding_with_an_env_key_is_refused() -> None:
    sensors = default_sensor_suite()
    sensors[-1] = {**sensors[-1], "id": "speed"}
    with pytest.raises(SensorSpecError, match="'speed'.*rename the sensor"):
        DrivingEnv(_world(), sensors=sensors)


def test_default_sensor_suite_fits_the_env() -> None:
    env = DrivingEnv(_world(), sensors=default_sensor_suite())
    assert {"rgb_front", "gps", "imu", "speedometer", "speed"} <= set(env.observation_space.keys())


def test_lite_backend_rejects_lidar_with_its_own_error() -> None:
    lidar = {"type": "sensor.lidar.ray_cast", "id": "lidar", "x": 0, "y": 0, "z": 2.0}
    lidar.update(roll=0, pitch=0, yaw=0)
    env = DrivingEnv(_world(), sensors=[*SMALL_CAMERA, lidar])
    with pytest.raises(SensorSpecError, match="sensor 'lidar'.*embedded simulator"):
        env.reset(seed=0)


def test_invalid_sensor_spec_is_reported_by_the_leaderboard_rules() -> None:
    with pytest.raises(SensorSpecError, match="mount radius"):
        DrivingEnv(_world(), sensors=[{**SMALL_CAMERA[0], "z": 5.0}])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action_type": "steer"}, "action_type"),
        ({"action_repeat": 0}, "action_repeat"),
        ({"max_episode_steps": 0}, "max_episode_steps"),
        ({"sim_seeds": ()}, "sim_seeds"),
        ({"render_mode": "human"}, "render_mode"),
        ({"reward": {"route_progress": 1.0}}, "reward term 'collisions_pedestrian'"),
        ({"reward": {"bogus": 1.0}}, "unknown reward term"),
    ],
)
def test_constructor_errors_name_the_argument(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DrivingEnv(_world(), **kwargs)


def test_unknown_reset_option_is_refused() -> None:
    env = _straight_env()
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['town'\]"):
        env.reset(seed=0, options={"town": 1})


def test_command_index_maps_road_options() -> None:
    assert [command_index(v) for v in (-1, 1, 2, 3, 4, 5, 6)] == [0, 1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------------- episodes
def test_target_point_and_command_on_a_straight_start() -> None:
    env = _straight_env()
    obs, info = env.reset(seed=0)
    assert info["sim_seed"] == STRAIGHT_SEED
    x, y = obs["target_point"]
    assert x == pytest.approx(10.0, abs=0.5) and abs(y) < 0.5
    assert obs["command"] in range(7)
    assert obs["speed"][0] == pytest.approx(0.0)


def test_driving_forward_earns_route_progress() -> None:
    env = _straight_env()
    env.reset(seed=0)
    total = dict.fromkeys(REWARD_TERMS, 0.0)
    reward_sum = 0.0
    for _ in range(60):
        obs, reward, terminated, truncated, info = env.step(np.array([0.5, 0, 0], np.float32))
        for term, value in info["rewards"].items():
            total[term] += value
        reward_sum += reward
        assert reward == pytest.approx(sum(info["rewards"].values()))
        assert not (terminated or truncated)
    assert obs["speed"][0] > 3.0
    assert info["route_progress_m"] > 5.0
    assert total["route_progress"] == pytest.approx(
        DEFAULT_WEIGHTS["route_progress"] * info["route_progress_m"]
    )
    assert sum(v for k, v in total.items() if k not in ("route_progress", "comfort")) == 0.0
    assert reward_sum > 0.0
    assert info["route_status"] == "Running" and info["route_failure"] is None
    np.testing.assert_allclose(info["control"], [0.5, 0.0, 0.0])


def test_collision_with_a_barrier_costs_the_layout_coefficient() -> None:
    env = _straight_env(spec=_world(props=(PropSpec(kind="barrier", route_s_m=25.0),)))
    env.reset(seed=0)
    hits = []
    for _ in range(100):
        _, _, _, _, info = env.step(FULL_THROTTLE)
        if info["events"]:
            hits.append(info)
    assert len(hits) == 1
    info = hits[0]
    assert [e["kind"] for e in info["events"]] == ["collisions_layout"]
    assert "static.prop.streetbarrier" in info["events"][0]["message"]
    weight = DEFAULT_WEIGHTS["collisions_layout"]
    assert info["rewards"]["collisions_layout"] == pytest.approx(-(1.0 - 0.65) * weight)


def test_driving_in_the_opposite_lane_cancels_its_progress() -> None:
    env = _straight_env()
    env.reset(seed=0)
    sim = env.sim
    assert isinstance(sim, LiteSimulator)
    lane = sim.town.lanes[int(sim.route.lane_ids[0])]
    left_m = (lane.index + 1) * lane.width  # the opposite direction's inner lane
    outside = 0.0
    for _ in range(200):
        s = sim.criteria.progress_m + 6.0 + 0.5 * max(sim.ego.speed, 0.0)
        yaw = sim.route.yaw_at(s)
        target = sim.route.point_at(s) + left_m * np.array([np.sin(yaw), -np.cos(yaw)])
        local = world_to_ego(target[None], np.array([sim.ego.x, sim.ego.y]), sim.ego.yaw)[0]
        steer = -np.arctan(MKZ_WHEELBASE_M * 2.0 * local[1] / (local @ local)) / MAX_STEER_ANGLE_RAD
        throttle = 0.5 if sim.ego.speed < 8.0 else 0.0
        _, _, _, _, info = env.step(np.array([throttle, steer, 0.0], np.float32))
        outside += info["rewards"]["outside_route_lanes"]
    status = sim.route_status
    assert status.outside_lanes_m > 20.0
    assert outside == pytest.approx(
        -DEFAULT_WEIGHTS["outside_route_lanes"] * status.outside_lanes_m
    )


def test_hard_braking_costs_comfort() -> None:
    env = _straight_env()
    env.reset(seed=0)
    for _ in range(40):
        _, _, _, _, info = env.step(np.array([0.6, 0, 0], np.float32))
    _, _, _, _, info = env.step(BRAKE)  # 9 m/s^2: over the -4.05 m/s^2 bound, and a jerk
    assert info["rewards"]["comfort"] < 0.0


def test_route_timeout_truncates_with_the_failure_penalty() -> None:
    env = _straight_env(spec=_world(timeout_s=1.0))
    env.reset(seed=0)
    for _ in range(40):
        _, _, terminated, truncated, info = env.step(BRAKE)
        if truncated:
            break
    assert truncated and not terminated
    assert info["route_failure"] == "Agent timed out"
    assert info["route_status"] == "Failed - Agent timed out"
    assert info["rewards"]["route_failure"] == pytest.approx(-DEFAULT_WEIGHTS["route_failure"])


def test_completing_the_route_terminates() -> None:
    env = _straight_env(privileged=True, action_repeat=4)
    env.reset(seed=0)
    driver = RouteFollower(DataProvider.simulator())  # type: ignore[arg-type]
    for _ in range(400):
        c = driver()
        _, _, terminated, truncated, info = env.step(
            np.array([c.throttle, c.steer, c.brake], np.float32)
        )
        if terminated or truncated:
            break
    assert terminated and not truncated
    assert info["route_completion"] == 100.0
    assert info["route_status"] in ("Perfect", "Completed")
    assert info["rewards"]["route_failure"] == 0.0
    env.close()


def test_max_episode_steps_truncates() -> None:
    env = _straight_env(max_episode_steps=3)
    env.reset(seed=0)
    flags = [env.step(BRAKE)[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_action_repeat_advances_that_many_ticks() -> None:
    env = _straight_env(action_repeat=2)
    assert env.metadata["render_fps"] == pytest.approx(10.0)
    env.reset(seed=0)
    t0 = env.sim.time_s
    env.step(BRAKE)
    assert env.sim.time_s - t0 == pytest.approx(0.1)


def test_a_step_renders_the_camera_once_for_its_observed_frame(monkeypatch) -> None:
    """With action_repeat 2 the first tick's camera frame is never observed: not rendered."""
    from sim.lite.camera import CameraRenderer

    env = _straight_env(action_repeat=2)
    env.reset(seed=0)
    renders: list[int] = []
    real = CameraRenderer.render

    def counting(self, ego_xy, ego_yaw_rad, boxes, weather, frame):
        renders.append(frame)
        return real(self, ego_xy, ego_yaw_rad, boxes, weather, frame)

    monkeypatch.setattr(CameraRenderer, "render", counting)
    for _ in range(3):
        obs = env.step(np.array([0.5, 0.0, 0.0], np.float32))[0]
        # The observation is the step's last frame, as an every-tick render would give it.
        expected = env.sim.sensor_data()[SMALL_CAMERA[0]["id"]][1]
        np.testing.assert_array_equal(obs[SMALL_CAMERA[0]["id"]], expected)
    frames = renders[::2]  # each check above rendered once more
    assert frames == [env.sim.frame - 4, env.sim.frame - 2, env.sim.frame]
    assert len(renders) == 6


def test_non_finite_actions_stop_safely() -> None:
    env = _straight_env()
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([np.nan, 0.3, 0.0], np.float32))
    np.testing.assert_array_equal(info["control"], [0.0, 0.0, 1.0])
    traj = _straight_env(action_type="trajectory")
    traj.reset(seed=0)
    _, _, _, _, info = traj.step(np.full((8, 2), np.inf, np.float32))
    np.testing.assert_array_equal(info["control"], [0.0, 0.0, 1.0])


def test_trajectory_action_is_tracked() -> None:
    env = _straight_env(action_type="trajectory")
    obs, _ = env.reset(seed=0)
    waypoints = np.stack([np.arange(1, 9) * 3.0, np.zeros(8)], axis=1).astype(np.float32)
    progress = 0.0
    for _ in range(60):  # 6 m/s straight ahead
        obs, _, _, _, info = env.step(waypoints)
        progress += info["rewards"]["route_progress"]
    assert obs["speed"][0] == pytest.approx(6.0, abs=1.0)
    assert abs(obs["target_point"][1]) < 0.5
    assert progress > 0.0


def test_privileged_info_only_when_asked() -> None:
    plain = _straight_env()
    _, info = plain.reset(seed=0)
    assert "ground_truth" not in info
    assert "ground_truth" not in plain.step(BRAKE)[4]
    privileged = _straight_env(privileged=True)
    _, info = privileged.reset(seed=0)
    assert DataProvider.simulator() is privileged.sim
    gt = privileged.step(BRAKE)[4]["ground_truth"]
    assert gt.ego.role == "hero" and gt.frame == privileged.sim.frame
    privileged.close()
    with pytest.raises(RuntimeError, match="no simulator is registered"):
        DataProvider.simulator()


def _rollout(env: DrivingEnv, seed: int, steps: int) -> tuple[list, list, list]:
    obs, info = env.reset(seed=seed)
    observations, rewards, names = [obs], [], [info["scenario"]]
    rng = np.random.default_rng(0)
    for _ in range(steps):
        action = rng.uniform([0, -0.2, 0], [1, 0.2, 0.2]).astype(np.float32)
        obs, reward, *_ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
    obs, info = env.reset()
    observations.append(obs)
    names.append(info["scenario"])
    return observations, rewards, names


def test_same_seed_same_episode() -> None:
    path = LIBRARY_ENV_IDS["vlmdrive/construction_left_clear-v0"]
    a = _rollout(make_env(path, sensors=SMALL_CAMERA), seed=7, steps=20)
    b = _rollout(make_env(path, sensors=SMALL_CAMERA), seed=7, steps=20)
    for obs_a, obs_b in zip(a[0], b[0], strict=True):
        for key in obs_a:
            np.testing.assert_array_equal(obs_a[key], obs_b[key])
    assert a[1] == b[1]
    assert a[2] == b[2]


def test_each_reset_draws_a_fresh_variation() -> None:
    env = make_env(LIBRARY_ENV_IDS["vlmdrive/construction_left_clear-v0"], sensors=SMALL_CAMERA)
    names = [env.reset(seed=1)[1]["scenario"], env.reset()[1]["scenario"]]
    names.append(env.reset(seed=2)[1]["scenario"])
    assert len(set(names)) == 3
    assert all(name.startswith("construction_left_clear#s") for name in names)


def test_variation_option_picks_the_file_variation() -> None:
    env = make_env(LIBRARY_ENV_IDS["vlmdrive/construction_left_clear-v0"], sensors=SMALL_CAMERA)
    _, info = env.reset(seed=0, options={"variation": 2, "sim_seed": 5})
    assert info["scenario"] == "construction_left_clear#2"
    assert info["sim_seed"] == 5
    pinned = make_env(LIBRARY_ENV_IDS["vlmdrive/construction_left_clear-v0"], variation=1)
    assert pinned.reset(seed=0)[1]["scenario"] == "construction_left_clear#1"
    assert pinned.reset(seed=1)[1]["scenario"] == "construction_left_clear#1"


def test_make_env_seed_makes_the_first_reset_reproducible() -> None:
    path = LIBRARY_ENV_IDS["vlmdrive/construction_left_clear-v0"]
    infos = [make_env(path, sensors=SMALL_CAMERA, seed=3).reset()[1] for _ in range(2)]
    assert infos[0]["scenario"] == infos[1]["scenario"]
    assert infos[0]["sim_seed"] == infos[1]["sim_seed"]


def test_render_rgb_array() -> None:
    env = _straight_env(render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame is not None and frame.dtype == np.uint8
    assert frame.ndim == 3 and frame.shape[2] == 3
    assert _straight_env().render() is None


def test_async_vector_env_runs() -> None:
    path = str(LIBRARY_ENV_IDS["vlmdrive/highway_cut_in_clear-v0"])
    fns = [
        lambda: gymnasium.make(
            GENERIC_ENV_ID, scenario=path, sensors=SMALL_CAMERA, variation=0, sim_seeds=(0,)
        )
    ] * 2
    envs = gymnasium.vector.AsyncVectorEnv(fns)
    try:
        obs, info = envs.reset(seed=[0, 1])
        assert obs["rgb_front"].shape == (2, 32, 64, 4)
        for _ in range(3):
            actions = np.tile(np.array([0.5, 0.0, 0.0], np.float32), (2, 1))
            obs, reward, terminated, truncated, info = envs.step(actions)
        assert reward.shape == (2,) and obs["speed"].shape == (2, 1)
        assert (obs["speed"][:, 0] > 0.0).all()
        assert "rewards" in info
    finally:
        envs.close()


def test_env_is_usable_with_a_lite_simulator_directly() -> None:
    env = _straight_env()
    assert isinstance(env.sim, LiteSimulator)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(BRAKE)
