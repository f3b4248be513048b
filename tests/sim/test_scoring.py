"""Leaderboard scoring against hand-computed examples, the minimum-speed criterion, and
Bench2Drive's success / efficiency / comfort metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim import scoring
from sim.control import RoadOption
from sim.geometry import GeoReference
from sim.ground_truth import INFRACTION_KEYS, ActorState, GroundTruth, InfractionEvent
from sim.min_speed import MinSpeedTest
from sim.route import Route
from sim.weather import Weather

OUTSIDE_MSG = (
    "Agent went outside its route lanes for about 150.0 meters (15.0% of the completed route)"
)


def ev(kind: str, pct: float | None = None, message: str | None = None) -> InfractionEvent:
    data = {} if pct is None else {"percentage": pct}
    return InfractionEvent(
        kind, message or f"{kind} happened", 10, 0.5, (1.0, 2.0, 0.0), None, data
    )


def meta(index: int = 0, length: float = 1000.0, route: int | None = None) -> scoring.RouteMeta:
    rid = scoring.route_id(index if route is None else route, 0)
    return scoring.RouteMeta(index, rid, "tiny#0", "ClearNoon", f"{rid}_x", "lite-town", length)


def record(events, rc: float = 100.0, failure: str = "", **kw) -> dict:
    return scoring.route_record(meta(**kw), events, rc, failure, 12.3456, 1.0)


# ------------------------------------------------------------------ route records
def test_two_vehicle_collisions_multiply_the_penalty() -> None:
    rec = record([ev("collisions_vehicle"), ev("collisions_vehicle")], rc=80.0)
    assert rec["scores"] == {"score_route": 80.0, "score_penalty": 0.36, "score_composed": 28.8}
    assert rec["infractions"]["collisions_vehicle"] == ["collisions_vehicle happened"] * 2
    assert rec["num_infractions"] == 2
    assert rec["status"] == "Failed"


def test_fixed_penalties_are_the_leaderboard_values() -> None:
    events = [
        ev(k)
        for k in (
            "collisions_pedestrian",
            "collisions_layout",
            "red_light",
            "stop_infraction",
            "scenario_timeouts",
            "yield_emergency_vehicle_infractions",
        )
    ]
    rec = record(events)
    expected = 0.5 * 0.65 * 0.7 * 0.8 * 0.7 * 0.7
    assert rec["scores"]["score_penalty"] == round(expected, 6)
    assert rec["scores"]["score_composed"] == round(100 * expected, 6)
    assert rec["status"] == "Completed"


def test_min_speed_factor_decreases_and_unused() -> None:
    events = [ev("min_speed_infractions", 60.0), ev("min_speed_infractions", 80.0)]
    rec = record(events)
    assert rec["scores"]["score_penalty"] == pytest.approx((1 - 0.3 * 0.4) * (1 - 0.3 * 0.2))
    assert rec["scores"]["score_penalty"] == 0.8272
    unused = scoring.route_record(meta(), events, 100.0, min_speed_policy="unused")
    assert unused["scores"]["score_penalty"] == 1.0
    assert unused["infractions"]["min_speed_infractions"] == [e.message for e in events]
    with pytest.raises(ValueError, match="min_speed_policy"):
        scoring.route_record(meta(), events, 100.0, min_speed_policy="ignore")


def test_outside_lanes_factor_is_one_minus_the_fraction() -> None:
    rec = record([ev("outside_route_lanes", 25.0)])
    assert rec["scores"]["score_penalty"] == 0.75
    with pytest.raises(ValueError, match="percentage"):
        record([ev("outside_route_lanes")])


def test_completion_rule_and_statuses() -> None:
    assert record([])["status"] == "Perfect"
    assert record([ev("min_speed_infractions", 90.0)])["status"] == "Completed"
    assert record([], rc=99.99)["status"] == "Failed"
    crashed = record([], rc=42.0, failure="Agent crashed")
    assert crashed["status"] == "Failed - Agent crashed"
    assert crashed["scores"]["score_composed"] == 42.0
    # Reaching the end wins over a failure message, as in the Leaderboard.
    assert record([], rc=100.0, failure="Agent crashed")["status"] == "Perfect"


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("route_dev", "Failed - Agent deviated from the route"),
        ("vehicle_blocked", "Failed - Agent got blocked"),
        ("route_timeout", "Failed - Agent timed out"),
    ],
)
def test_route_ending_events_set_the_failure(kind: str, status: str) -> None:
    rec = record([ev(kind)], rc=30.0, failure="Agent crashed")
    assert rec["status"] == status
    assert rec["num_infractions"] == 1
    assert rec["scores"]["score_penalty"] == 1.0  # these end the route, they cost nothing
    if kind == "route_timeout":
        assert rec["infractions"]["route_timeout"] == ["Route timeout."]


def test_record_keys_rounding_and_meta() -> None:
    rec = scoring.route_record(
        meta(length=123.45678), [ev("collisions_vehicle")], 100 / 3, "", 7.77777, 0.123456
    )
    assert tuple(rec) == scoring.ROUTE_RECORD_KEYS
    assert tuple(rec["infractions"]) == INFRACTION_KEYS
    assert set(rec["scores"]) == {"score_route", "score_penalty", "score_composed"}
    assert rec["meta"] == {
        "route_length": 123.457,
        "duration_game": 7.778,
        "duration_system": 0.123,
    }
    assert rec["scores"]["score_route"] == 33.333333
    assert rec["scores"]["score_composed"] == 20.0
    assert rec["town_name"] == "lite-town"
    with pytest.raises(ValueError, match="route_completion"):
        record([], rc=101.0)


def test_route_ids_sort_like_the_leaderboard() -> None:
    ids = ["RouteScenario_10_rep0", "RouteScenario_2_rep1", "RouteScenario_2_rep0"]
    assert sorted(ids, key=scoring.route_sort_key) == [
        "RouteScenario_2_rep0",
        "RouteScenario_2_rep1",
        "RouteScenario_10_rep0",
    ]
    assert scoring.route_id(3, 1) == "RouteScenario_3_rep1"
    with pytest.raises(ValueError, match="route_id"):
        scoring.route_sort_key("route3")
    with pytest.raises(ValueError, match="index"):
        scoring.RouteMeta(-1, "RouteScenario_0_rep0", "s", "w", "n", "t", 1.0)


# ------------------------------------------------------------------ global record
def _two_routes() -> list[dict]:
    a = scoring.route_record(
        meta(0, 1000.0), [ev("outside_route_lanes", 15.0, OUTSIDE_MSG)], 100.0, "", 10.0, 1.0
    )
    b = scoring.route_record(
        meta(1, 500.0), [ev("collisions_vehicle"), ev("collisions_vehicle")], 80.0, "", 5.0, 2.0
    )
    return [a, b]


def test_global_means_sample_std_and_per_km() -> None:
    a, b = _two_routes()
    assert a["scores"]["score_composed"] == 85.0 and b["scores"]["score_composed"] == 28.8
    g = scoring.global_record([a, b])
    assert g["scores_mean"] == {"score_composed": 56.9, "score_route": 90.0, "score_penalty": 0.605}
    assert g["scores_std_dev"]["score_composed"] == round(math.sqrt(2 * 28.1**2), 3)  # 39.74
    assert g["scores_std_dev"]["score_route"] == round(math.sqrt(2 * 10.0**2), 3)
    # km driven = 1.0 * 100% + 0.5 * 80% = 1.4 km
    assert g["infractions"]["collisions_vehicle"] == round(2 / 1.4, 3) == 1.429
    assert g["infractions"]["outside_route_lanes"] == 0.15  # km outside lanes, not per km
    assert g["infractions"]["red_light"] == 0.0
    assert g["status"] == "Failed"
    assert g["meta"]["total_length"] == 1500.0
    assert g["meta"]["duration_game"] == 15.0
    assert g["meta"]["exceptions"] == [["RouteScenario_1_rep0", 1, "Failed"]]
    assert set(g) == {
        "index",
        "route_id",
        "status",
        "infractions",
        "scores_mean",
        "scores_std_dev",
        "meta",
    }
    assert (g["index"], g["route_id"]) == (-1, -1)


def test_one_route_has_zero_std_and_global_status_downgrades() -> None:
    perfect = record([])
    completed = record([ev("min_speed_infractions", 90.0)])
    assert scoring.global_record([perfect])["scores_std_dev"] == {
        "score_composed": 0,
        "score_route": 0,
        "score_penalty": 0,
    }
    assert scoring.global_record([perfect])["status"] == "Perfect"
    assert scoring.global_record([perfect, completed])["status"] == "Completed"
    # Means divide by the evaluation's route count, like the Leaderboard.
    assert scoring.global_record([perfect], total_routes=4)["scores_mean"]["score_composed"] == 25.0


def test_values_labels_and_results_layout() -> None:
    records = _two_routes()
    res = scoring.final_results(records, 2, ["carla_camera"], sensors_initialized=True)
    assert set(res) == {"_checkpoint", "entry_status", "eligible", "sensors", "values", "labels"}
    assert set(res["_checkpoint"]) == {"global_record", "progress", "records"}
    assert res["_checkpoint"]["progress"] == [2, 2]
    assert (res["entry_status"], res["eligible"]) == ("Finished", True)
    assert len(res["values"]) == len(res["labels"]) == 15
    assert all(isinstance(v, str) for v in res["values"])
    assert res["values"][:3] == ["56.9", "90.0", "0.605"]
    assert res["labels"][4] == "Collisions with vehicles" and res["values"][4] == "1.429"
    assert res["labels"][8] == "Off-road infractions" and res["values"][8] == "0.15"
    running = scoring.results_json(records[:1], (1, 2), [], "Started")
    assert running["_checkpoint"]["global_record"] == {}
    assert running["values"] == running["labels"] == []
    assert running["eligible"] is False


def test_entry_status_and_validation() -> None:
    ok = record([])
    rejected = record([], rc=0.0, failure="Agent's sensors were invalid")
    crashed = record([], rc=0.0, failure="Simulation crashed")
    assert scoring.entry_status_of([ok]) == "Finished"
    assert scoring.entry_status_of([ok, rejected]) == "Rejected"
    assert scoring.entry_status_of([crashed]) == "Crashed"
    assert scoring.final_results([ok], 2, ["x"], True)["entry_status"] == "Invalid"  # progress
    assert scoring.final_results([ok], 1, [], True)["entry_status"] == "Invalid"  # no sensors
    assert scoring.final_results([ok], 1, [], False)["entry_status"] == "Finished"
    with pytest.raises(ValueError, match="entry_status"):
        scoring.results_json([ok], (1, 1), [], "Done")


# ------------------------------------------------------------------ min speed
def _straight_route(length_m: int = 100) -> Route:
    xs = np.arange(length_m + 1, dtype=float)
    n = len(xs)
    return Route(
        points=np.stack([xs, np.zeros(n)], 1),
        yaw=np.zeros(n),
        options=np.full(n, int(RoadOption.LANEFOLLOW)),
        geo=GeoReference(42.0, 2.0),
        lane_ids=np.zeros(n, dtype=int),
    )


def _gt(frame: int, ego_x: float, ego_v: float, others: list[ActorState]) -> GroundTruth:
    ego = ActorState(1, "vehicle.lincoln.mkz_2020", ego_x, 0.0, 0.0, ego_v, (4.9, 2.1, 1.5), "hero")
    return GroundTruth(
        frame, frame * 0.05, ego, tuple(others), (), (), Weather(), 1.0, ego_x, 0.0, (), 13.9
    )


def _drive_min_speed(others_at: list[tuple[float, float, str, str]]) -> tuple[MinSpeedTest, list]:
    """Ego at 5 m/s along a 100 m route; `others_at` = (dy, speed, role, type) riding along."""
    test = MinSpeedTest(_straight_route())
    events = []
    frame, x = 0, 0.0
    while x < 99.5:
        frame += 1
        x += 5.0 * 0.05
        others = [
            ActorState(10 + i, type_id, x + 5.0, dy, 0.0, v, (4.6, 1.9, 1.5), role)
            for i, (dy, v, role, type_id) in enumerate(others_at)
        ]
        events += test.update(_gt(frame, x, 5.0, others))
    events += test.terminate(_gt(frame, x, 5.0, []))
    return test, events


def test_min_speed_checkpoints_against_surrounding_traffic() -> None:
    test, events = _drive_min_speed([(3.5, 10.0, "background", "vehicle.npc.sedan")])
    assert test.checkpoint_values == [50.0, 50.0, 50.0, 50.0]  # 4 stretches of 25 m
    assert [e.kind for e in events] == ["min_speed_infractions"] * 4
    assert events[0].message == "Average speed is 50.0% of the surrounding traffic's one"
    assert events[0].data == {"percentage": 50.0}
    rec = record(events)
    assert rec["scores"]["score_penalty"] == round(0.85**4, 6)


def test_min_speed_ignores_far_scenario_and_walker_actors_and_faster_ego() -> None:
    far = (80.0, 10.0, "background", "vehicle.npc.sedan")  # beyond SURROUNDING_RADIUS_M
    scripted = (3.5, 10.0, "scenario", "vehicle.npc.sedan")
    walker = (3.5, 10.0, "background", "walker.pedestrian.0001")
    test, events = _drive_min_speed([far, scripted, walker])
    assert test.checkpoint_values == [100.0] * 4 and events == []  # no traffic: 100 %
    test, events = _drive_min_speed([(3.5, 2.5, "background", "vehicle.npc.sedan")])
    assert test.checkpoint_values == [200.0] * 4 and events == []  # faster than traffic


def test_min_speed_needs_95_percent_for_the_last_checkpoint() -> None:
    test = MinSpeedTest(_straight_route())
    car = ActorState(9, "vehicle.npc.sedan", 0.0, 3.0, 0.0, 10.0, (4.6, 1.9, 1.5), "background")
    for frame in range(1, 201):  # 50 m at 5 m/s
        test.update(_gt(frame, frame * 0.25, 5.0, [car]))
    assert test.terminate(_gt(200, 50.0, 5.0, [])) == []
    assert test.checkpoint_values == [50.0]
    with pytest.raises(ValueError, match="checkpoints"):
        MinSpeedTest(_straight_route(), checkpoints=0)


# ------------------------------------------------------------------ Bench2Drive
def test_success_ignores_only_min_speed() -> None:
    assert scoring.route_success(record([ev("min_speed_infractions", 50.0)]))
    assert not scoring.route_success(record([ev("collisions_layout")]))
    assert not scoring.route_success(record([], rc=80.0))


def test_efficiency_drops_values_over_1000_percent() -> None:
    assert scoring.route_efficiency([80.0, 120.0, 1500.0]) == 100.0
    assert scoring.route_efficiency([]) is None


def test_savgol_is_exact_on_a_quadratic() -> None:
    x = np.arange(30) * 0.1
    y = 3.0 * x**2 - 2.0 * x + 1.0
    assert np.allclose(scoring.savgol(y, 7, 2), y)
    assert np.allclose(scoring.savgol(y, 7, 2, deriv=1, delta=0.1), 6.0 * x - 2.0)
    assert np.allclose(scoring.savgol(y[:5], 7, 2, deriv=1, delta=0.1), 6.0 * x[:5] - 2.0)
    with pytest.raises(ValueError, match="poly_order"):
        scoring.savgol(y[:2], 7, 2)


def _traj(speed: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    t = np.arange(len(speed)) * scoring.COMFORT_SAMPLE_S
    return np.stack([t, np.zeros_like(t), np.zeros_like(t), yaw, speed], 1)


def test_comfort_segments_and_bounds() -> None:
    n = 45  # two full 2 s segments; the last 5 samples are dropped like Bench2Drive
    cruise = scoring.comfort_metrics(_traj(np.full(n, 10.0), np.zeros(n)))
    assert cruise["score"] == 100.0 and (cruise["segments"], cruise["comfortable"]) == (2, 2)
    # Braking at -6 m/s^2 from the middle of the second segment.
    brake = np.concatenate([np.full(30, 20.0), 20.0 - 0.6 * np.arange(1, 16)])
    hard = scoring.comfort_metrics(_traj(brake, np.zeros(n)))
    assert hard["score"] == 50.0 and hard["exceeded"]["lon_accel"] == 1
    spin = scoring.comfort_metrics(_traj(np.full(n, 1.0), 0.12 * np.arange(n)))  # 1.2 rad/s
    assert spin["score"] == 0.0 and spin["exceeded"]["yaw_rate"] == 2
    short = scoring.comfort_metrics(_traj(np.full(12, 5.0), np.zeros(12)))
    assert (short["segments"], short["score"]) == (1, 100.0)
    assert scoring.comfort_metrics(np.zeros((2, 5)))["score"] is None
    with pytest.raises(ValueError, match="trajectory"):
        scoring.comfort_metrics(np.zeros((10, 4)))


def test_summary_by_tag() -> None:
    def route(ds: float, rc: float, tags: list[str], success: bool, eff, comfort) -> dict:
        return {
            "scores": {"score_composed": ds, "score_route": rc, "score_penalty": ds / rc},
            "tags": tags,
            "bench2drive": {"success": success, "efficiency": eff, "comfort": {"score": comfort}},
        }

    s = scoring.summary(
        [
            route(100.0, 100.0, ["fog", "cut_in"], True, 90.0, 100.0),
            route(20.0, 40.0, ["fog"], False, None, 50.0),
        ]
    )
    assert (s["routes"], s["driving_score"], s["route_completion"]) == (2, 60.0, 70.0)
    assert s["infraction_penalty"] == 0.75
    assert (s["success_rate"], s["efficiency"], s["comfortness"]) == (50.0, 90.0, 75.0)
    assert s["by_tag"] == {
        "cut_in": {
            "routes": 1,
            "driving_score": 100.0,
            "route_completion": 100.0,
            "success_rate": 100.0,
        },
        "fog": {"routes": 2, "driving_score": 60.0, "route_completion": 70.0, "success_rate": 50.0},
    }
