"""The training pipeline end to end on a tiny synthetic dataset: typed config errors,
all four stages, resume after an interruption, the exported checkpoint (safetensors, a
Hugging Face VLM directory), open-loop metrics and the model card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from agent.data.schema import FIELDS, FLAGS, INTENTS, MAX_OBSTACLES
from agent.model.checkpoint import load_drive_model
from agent.training import trainer as trainer_module
from agent.training.config import TrainConfig, load_train_config
from agent.training.open_loop import (
    evaluate_open_loop,
    flag_events,
    flag_metrics,
    perception_metrics,
    rouge_l,
)
from agent.training.trainer import Trainer
from scenarios.loader import ScenarioError

H, W = 32, 64


def write_dataset(path: Path, episodes: int = 2, frames: int = 12, seed: int = 0) -> None:
    """Synthetic shard: dark 'night' frames vs bright ones, straight trajectories whose speed
    follows the brightness, flags/intent/text consistent with it."""
    rng = np.random.default_rng(seed)
    n = episodes * frames
    night = np.arange(n) % 2 == 0
    image = np.where(night[:, None, None, None, None], 30, 200).astype(np.uint8)
    image = np.broadcast_to(image, (n, 1, H, W, 3)).copy()
    image += rng.integers(0, 20, image.shape, dtype=np.uint8)
    speed = np.where(night, 5.0, 10.0).astype(np.float32)
    t = np.arange(1, 9, dtype=np.float32) * 0.5
    traj = np.stack([speed[:, None] * t, np.zeros((n, 8), np.float32)], axis=-1)
    flags = np.zeros((n, len(FLAGS)), bool)
    flags[:, FLAGS.index("night")] = night
    text = np.where(
        night,
        "Clear night. Road ahead is free; keep the lane at 20 km/h.",
        "Clear day. Road ahead is free; keep the lane at 35 km/h.",
    )
    arrays = {
        "image": image,
        "speed_mps": speed,
        "command": np.full(n, 4, np.int64),
        "target_point": np.tile(np.float32([40.0, 0.0]), (n, 1)),
        "trajectory": traj.astype(np.float32),
        "flags": flags,
        "intent": np.where(night, INTENTS.index("slow_down"), 0).astype(np.int64),
        "text": text.astype(FIELDS["text"][1]),
        "obstacles": np.zeros((n, MAX_OBSTACLES, 8), np.float32),
        "obstacle_mask": np.zeros((n, MAX_OBSTACLES), bool),
        "light_state": np.zeros(n, np.int64),
        "target_speed_mps": speed,
        "episode": np.repeat(np.arange(episodes), frames).astype(np.int64),
        "frame": np.tile(np.arange(frames) * 10, episodes).astype(np.int64),
        "time_s": np.tile(np.arange(frames) * 0.5, episodes).astype(np.float32),
        "scenario": np.full(n, "synthetic#0", dtype=FIELDS["scenario"][1]),
    }
    path.mkdir(parents=True)
    np.savez_compressed(path / "shard-00000.npz", **arrays)


def config(tmp_path: Path, **stages: int) -> dict:
    return {
        "seed": 0,
        "threads": 1,
        "data": {"train": str(tmp_path / "data")},
        "out": str(tmp_path / "ckpt"),
        "run_dir": str(tmp_path / "run"),
        "checkpoint_every": 2,
        "model": {
            "d_model": 32,
            "heads": 2,
            "reasoning_dim": 16,
            "encoder": {
                "hidden_sizes": [8, 16],
                "depths": [1, 1],
                "image_height": H,
                "image_width": W,
            },
            "planner": {"num_modes": 4},
        },
        "vlm": {"image_size": 32, "vocab_size": 300},
        "stages": [
            {"name": name, "steps": steps, "batch_size": 4, "lr": 1e-3}
            for name, steps in stages.items()
        ],
    }


def test_unknown_keys_are_errors_with_a_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  train: data\nstages: []\nmodle: {}\n")
    with pytest.raises(ScenarioError, match=r"bad.yaml:4:1: modle: unknown field"):
        load_train_config(path)
    path.write_text(
        "data: {train: d}\nstages:\n  - {name: joint, steps: 1}\n  - {name: vlm, steps: 1}\n"
    )
    with pytest.raises(ScenarioError, match="order"):
        load_train_config(path)


def test_all_stages_then_checkpoint_open_loop_and_card(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data")
    cfg = TrainConfig.model_validate(config(tmp_path, vlm=3, frozen=4, lora=2, joint=2))
    summary = Trainer(cfg, progress=False).run()
    assert set(summary) >= {"vlm", "frozen", "lora", "joint", "train_wall_s"}
    out = tmp_path / "ckpt"
    model, meta = load_drive_model(out)
    assert meta["training"]["frames"] == 24
    assert meta["training"]["dataset_summaries"] == [None]  # the synthetic set has no index
    assert (out / "vlm" / "config.json").is_file()
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))
    from transformers import AutoModelForImageTextToText

    hf = AutoModelForImageTextToText.from_pretrained(out / "vlm", local_files_only=True)
    assert not any("lora" in name for name, _ in hf.named_parameters())  # merged
    metrics = evaluate_open_loop(out, tmp_path / "data", text_frames=4)
    for source in ("vlm", "distilled"):
        m = metrics[source]
        assert {"L2@1s", "L2@2s", "L2@3s", "collision_rate", "intent_accuracy"} <= set(m)
        assert 0.0 <= m["minL2@3s"] <= m["L2@3s"]  # the chosen one is one of the K
        assert m["flags"]["per_flag"]["night"]["support"] == 12
    assert 0.0 <= metrics["vlm"]["text"]["rouge_l_f1"] <= 1.0
    perception = metrics["perception"]
    assert set(perception["bev"]) == set(model.cfg.perception.bev_classes)
    assert 0.0 <= perception["light_accuracy"] <= 1.0
    checks = perception["guard_checks"]
    assert checks["model"]["frames"] == checks["ground_truth"]["frames"] == 24
    # replayed at several occupancy thresholds: fewer occupied cells never flag more plans
    by = checks["model_by_threshold"]
    assert list(by) == ["0.3", "0.4", "0.5"] and by["0.5"] == checks["model"]
    flagged = [by[t]["expert_plan_flagged"] for t in by]
    assert flagged == sorted(flagged, reverse=True)
    assert "span" not in perception  # the model has no span head
    from agent.training.card import write_model_card

    (out / "open_loop.json").write_text(json.dumps(metrics))
    card = write_model_card(out).read_text()
    assert "L2@3s" in card and "vlmdrive-tiny" in card
    assert "| the model's heads, cells >= 0.5 (the guard's setting) | 24 |" in card
    assert "| the model's heads, cells >= 0.3 | 24 |" in card


def test_resume_continues_from_the_saved_step(tmp_path: Path, monkeypatch) -> None:
    write_dataset(tmp_path / "data")
    cfg = TrainConfig.model_validate(
        {**config(tmp_path, frozen=6), "vlm": {"image_size": 32, "vocab_size": 300}}
        | {"augment": {"brightness": 0.2, "saturation": 0.2}}  # draws from the saved generator
        | {
            "stages": [
                {"name": "vlm", "steps": 1, "batch_size": 4},
                {"name": "frozen", "steps": 6, "batch_size": 4},
            ]
        }
    )
    calls = {"n": 0}
    real = trainer_module.compute_losses

    def crash_on_fifth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "compute_losses", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, progress=False).run()
    progress = json.loads((tmp_path / "run" / "state" / "progress.json").read_text())
    assert progress["stage"] == "frozen" and progress["step"] == 4  # saved every 2 steps
    assert progress["done"] == ["vlm"]
    calls["n"] = -100
    Trainer(cfg, progress=False).run(resume=True)
    assert calls["n"] == -100 + 2  # only steps 4 and 5 ran again
    model, _ = load_drive_model(tmp_path / "ckpt")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_config_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, vlm=1, frozen=1)))
    cfg = load_train_config(path)
    assert [s.name for s in cfg.stages] == ["vlm", "frozen"]
    assert cfg.model.encoder.image_height == H


def test_shipped_configs_are_valid_and_chain_the_two_rounds() -> None:
    configs = Path(__file__).resolve().parents[2] / "configs"
    round1 = load_train_config(configs / "tiny_round1.yaml")
    assert [s.name for s in round1.stages] == ["vlm", "frozen", "lora", "joint"]
    assert round1.vlm.init is None  # the VLM is trained here from scratch
    final = load_train_config(configs / "tiny.yaml")
    assert [s.name for s in final.stages] == ["frozen", "lora", "joint"]
    assert final.vlm.init == round1.out / "vlm"  # round 2 starts from round 1's VLM
    dagger = yaml.safe_load((configs / "agent_dagger.yaml").read_text())
    assert Path(dagger["checkpoint"]) == round1.out  # the DAgger round drives round 1
    # The augmentation experiment is round 2 with augmentation and nothing else changed.
    augment = load_train_config(configs / "tiny_augment.yaml")
    assert augment.augment.enabled and not final.augment.enabled
    same = {"augment", "out", "run_dir"}
    assert augment.model_dump(exclude=same) == final.model_dump(exclude=same)


def test_a_scorer_fine_tune_changes_the_scores_and_nothing_else(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    write_dataset(tmp_path / "data")
    base = config(tmp_path, vlm=1, frozen=2)
    Trainer(TrainConfig.model_validate(base), progress=False).run()
    init = tmp_path / "ckpt"
    tune = {k: v for k, v in base.items() if k != "model"} | {
        "init": str(init),
        "out": str(tmp_path / "tuned"),
        "run_dir": str(tmp_path / "run-tune"),
        "vlm": {"init": str(init / "vlm"), "image_size": 32, "vocab_size": 300},
        "loss": {"mode_target": "candidate"},
        "stages": [
            {
                "name": "frozen",
                "steps": 3,
                "batch_size": 4,
                "trainable": ["planner.layers.*.score.*"],
            }
        ],
    }
    summary = Trainer(TrainConfig.model_validate(tune), progress=False).run()
    assert summary["init"] == str(init)
    from agent.training.card import write_model_card

    assert f"Fine-tuned from `{init}`" in write_model_card(tmp_path / "tuned").read_text()
    before = load_file(str(init / "model.safetensors"))
    after = load_file(str(tmp_path / "tuned" / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # the scorer moved; every other weight and buffer (anchors, batch-norm statistics) did not
    assert changed and all(".score." in k for k in changed)
    assert any("running_mean" in k for k in before)

    # a model section that disagrees with the init checkpoint, a pattern that matches
    # nothing, and `trainable` outside the frozen stage are errors
    wrong = tune | {"model": base["model"] | {"d_model": 64}}
    with pytest.raises(ValueError, match=r"differs from .*\['d_model'\]"):
        Trainer(TrainConfig.model_validate(wrong), progress=False)
    nothing = tune | {"stages": [{"name": "frozen", "steps": 1, "trainable": ["no.such.*"]}]}
    with pytest.raises(ValueError, match="match no parameter"):
        Trainer(TrainConfig.model_validate(nothing), progress=False).run()
    with pytest.raises(ValueError, match="frozen' stage only"):
        TrainConfig.model_validate(
            tune | {"stages": [{"name": "lora", "steps": 1, "trainable": ["planner.*"]}]}
        )


def test_extra_datasets_are_appended_with_distinct_episode_ids(tmp_path: Path) -> None:
    from agent.training.trainer import load_arrays

    write_dataset(tmp_path / "a", episodes=2, frames=6)
    write_dataset(tmp_path / "b", episodes=3, frames=4, seed=1)
    arrays = load_arrays(tmp_path / "a", 2, 1, extra=(tmp_path / "b",))
    assert len(arrays) == 2 * 6 + 3 * 4
    assert sorted(set(arrays.data["episode"].tolist())) == [0, 1, 2, 3, 4]
    # history never reaches across datasets: the first frame of b's first episode has no past
    first_b = 12
    assert arrays.history[first_b].tolist() == [first_b, first_b]


def test_rouge_l() -> None:
    assert rouge_l("keep the lane", "keep the lane") == 1.0
    assert rouge_l("stop now", "keep the lane") == 0.0
    assert 0 < rouge_l("keep lane at 30", "keep the lane at 50") < 1


def test_flag_events_split_at_gaps_and_episode_boundaries() -> None:
    truth = np.array([1, 1, 0, 1, 1, 1, 0, 0], dtype=bool)
    episode = np.array([0, 0, 0, 0, 1, 1, 1, 2])  # the run 3..5 crosses into episode 1
    assert [e.tolist() for e in flag_events(truth, episode)] == [[0, 1], [3], [4, 5]]
    assert flag_events(np.zeros(4, dtype=bool), np.zeros(4, dtype=int)) == []


def test_flag_metrics_frame_and_event_recall() -> None:
    from agent.data.schema import FLAGS

    n = 10
    truth = np.zeros((n, len(FLAGS)), dtype=bool)
    pred = np.zeros_like(truth)
    episode = np.repeat([0, 1], 5)
    c = FLAGS.index("construction")
    truth[0:4, c] = True  # event 1: seen from its third frame on
    pred[2:4, c] = True
    truth[6:9, c] = True  # event 2: never flagged
    pred[9, c] = True  # a false alarm
    m = flag_metrics(pred, truth, episode)
    v = m["per_flag"]["construction"]
    assert v["support"] == 7 and v["recall"] == round(2 / 7, 4)
    assert v["precision"] == round(2 / 3, 4)
    assert v["events"] == 2 and v["event_recall"] == 0.5
    assert v["frames_to_detect"] == 2.0
    assert m["macro_recall"] == round(2 / 7, 4)  # the only flag with support
    assert m["macro_event_recall"] == 0.5
    assert "macro_event_recall" not in flag_metrics(pred, truth)


def test_flag_metrics_recall_by_the_hazards_distance() -> None:
    from agent.data.schema import FLAGS

    n = 6
    truth = np.zeros((n, len(FLAGS)), dtype=bool)
    pred = np.zeros_like(truth)
    distance = np.full(truth.shape, np.nan, dtype=np.float32)
    c, r = FLAGS.index("construction"), FLAGS.index("rain")
    truth[:, c] = True
    distance[:, c] = [55.0, 75.0, 30.0, 25.0, 10.0, 0.0]  # 75 m: beyond the bands, the last
    pred[[2, 4, 5], c] = True  # both far frames missed, one of the two in the middle
    truth[:2, r] = True
    distance[:2, r] = 0.0  # weather counts as here
    m = flag_metrics(pred, truth, distance=distance)
    v = m["per_flag"]["construction"]
    assert v["support_by_distance"] == {"0-20 m": 2, "20-40 m": 2, "40-60 m": 2}
    assert v["recall_by_distance"] == {"0-20 m": 1.0, "20-40 m": 0.5, "40-60 m": 0.0}
    assert m["per_flag"]["rain"]["recall_by_distance"]["0-20 m"] == 0.0
    assert np.isnan(m["per_flag"]["rain"]["recall_by_distance"]["20-40 m"])
    assert m["macro_recall_near"] == 0.5  # construction 1.0 and rain 0.0 within 20 m
    assert "macro_recall_near" not in flag_metrics(pred, truth)


def test_perception_metrics_count_cells_per_class_and_in_the_corridor() -> None:
    from agent.model.config import PerceptionConfig

    grid = PerceptionConfig()  # 16 rows from x = -8 m, 8 columns from y = -16 m, 4 m cells
    rows, cols = grid.bev_shape
    truth = np.zeros((2, len(grid.bev_classes), rows, cols), dtype=bool)
    pred = np.zeros_like(truth)
    v = grid.bev_classes.index("vehicle")
    truth[0, v, 4, 3] = truth[0, v, 5, 4] = True  # two cells in the corridor (x 10 / 14 m)
    truth[1, v, 4, 0] = True  # one far to the right
    pred[0, v, 4, 3] = True  # hit in the corridor
    pred[1, v, 4, 1] = True  # miss beside it
    pred[1, v, 15, 4] = True  # corridor column but 50 m ahead: outside the corridor rows
    m = perception_metrics(pred, truth, np.array([1, 0]), np.array([1, 1]), grid)
    veh = m["bev"]["vehicle"]
    assert veh["grid"] == {
        "precision": round(1 / 3, 4),
        "recall": round(1 / 3, 4),
        "iou": 0.2,
        "support": 3,
    }
    assert veh["corridor"] == {"precision": 1.0, "recall": 0.5, "iou": 0.5, "support": 2}
    # A 1 m grid centred on the ego: the corridor is the columns reaching within 1.46 m
    # of its centre line (y = -1, 0, 1), not the two beside it.
    fine = PerceptionConfig(bev_y_m=(-12.5, 12.5), bev_cell_m=2.0, bev_cell_y_m=1.0)
    rows, cols = fine.bev_shape
    truth = np.zeros((1, len(fine.bev_classes), rows, cols), dtype=bool)
    truth[0, v, 10, [11, 12, 13]] = True  # x 13 m, y -1 / 0 / 1: in the corridor
    truth[0, v, 10, 10] = True  # y = -2 m: beside it
    corridor = perception_metrics(truth, truth, np.zeros(1), np.zeros(1), fine)["bev"]["vehicle"]
    assert corridor["corridor"]["support"] == 3 and corridor["grid"]["support"] == 4
    assert m["bev"]["pedestrian"]["grid"]["support"] == 0
    assert m["bev"]["pedestrian"]["grid"]["recall"] is None
    assert m["light_accuracy"] == 0.5 and m["red_light_recall"] == 0.5


def test_span_metrics_measure_the_edges_on_cells_both_predicted_and_true() -> None:
    from agent.model.config import PerceptionConfig
    from agent.training.card import _guard_check_lines, _span_lines
    from agent.training.open_loop import span_metrics

    grid = PerceptionConfig()  # 4 m wide cells
    rows, cols = grid.bev_shape
    truth = np.zeros((1, 3, rows, cols), dtype=bool)
    pred = np.zeros_like(truth)
    truth[0, 2, 5, 4] = pred[0, 2, 5, 4] = True  # a hit
    truth[0, 2, 6, 4] = True  # missed: no span to judge
    pred[0, 2, 7, 4] = True  # false alarm: no true span
    span_truth = np.zeros((1, 3, 2, rows, cols), dtype=np.float32)
    span_pred = np.zeros_like(span_truth)
    span_truth[0, 2, :, 5, 4] = [0.45, 0.55]
    span_pred[0, 2, :, 5, 4] = [0.6, 0.5]  # edges come sorted: [0.5, 0.6], 0.05 off each
    m = span_metrics(span_pred, span_truth, pred, truth, grid)
    assert m["static"] == {"cells": 1, "edge_mae_m": 0.2}
    assert m["vehicle"] == {"cells": 0, "edge_mae_m": None}
    line = "".join(_span_lines(m))
    assert "static 0.2 m (1 cells)" in line and "vehicle" not in line
    assert _span_lines(None) == [] and _guard_check_lines(None) == []
    table = _guard_check_lines(
        {
            "model": {
                "frames": 10,
                "expert_plan_flagged": 0.1,
                "hazards": 2,
                "hazards_caught": 0.5,
            },
            "ground_truth": {
                "frames": 10,
                "expert_plan_flagged": 0.0,
                "hazards": 0,
                "hazards_caught": None,
            },
        }
    )
    assert "| the model's heads | 10 | 10.0 % | 50.0 % of 2 |" in table
    assert "| ground truth, same grid | 10 | 0.0 % | - of 0 |" in table


def test_model_card_lists_each_dataset_as_recorded_at_training_time(tmp_path: Path) -> None:
    from agent.data.collect import collect_command
    from agent.data.dataset import dataset_summary
    from agent.training.card import _frames_line

    dagger = tmp_path / "dagger"
    dagger.mkdir()
    args = {"suite": "s", "episodes": 3, "out": "x", "seed": 2, "workers": 1, "perturb": 0.0}
    args |= {"dagger": "a.yaml", "dagger_beta": 0.6}
    index = {"episodes": 3, "frames": 120, "counts": {"policy_frames": 70}, "args": args}
    (dagger / "index.json").write_text(json.dumps(index))
    recorded = dataset_summary(dagger)
    gone = str(tmp_path / "gone")
    assert dataset_summary(gone) is None
    training = {"frames": 120, "episodes": 3, "datasets": [str(dagger), gone]}
    line = _frames_line(training | {"dataset_summaries": [recorded, None]})
    assert line.startswith("- Frames: 120 from 3 episodes")
    entry = (
        f"`{dagger}`: 3 episodes, 120 frames, 70 of them with the model driving (DAgger); "
        f"`{collect_command(args)}`"
    )
    assert f"{entry}\n" in line
    assert line.endswith(f"  - `{gone}`")  # recorded as missing, not here either: the name
    # The folder changes after training (collected again, bigger): the card keeps the record.
    (dagger / "index.json").write_text(json.dumps(index | {"frames": 999}))
    assert f"{entry}\n" in _frames_line(training | {"dataset_summaries": [recorded, None]})
    # A checkpoint from before the record: the folder as it is now, and said so.
    old = _frames_line(training)
    assert "999 frames" in old and "(the folder as it is now, not recorded at training time)" in old


def test_model_card_flag_tables_with_distance_bands() -> None:
    from agent.training.card import _flag_lines

    n = 4
    truth = np.zeros((n, len(FLAGS)), dtype=bool)
    distance = np.full(truth.shape, np.nan, dtype=np.float32)
    c = FLAGS.index("construction")
    truth[:, c] = True
    distance[:, c] = [5.0, 15.0, 30.0, 50.0]
    pred = truth.copy()
    pred[3, c] = False  # the far one missed
    text = "\n".join(_flag_lines(flag_metrics(pred, truth, np.zeros(n, int), distance)))
    assert "| flag | 0-20 m | 20-40 m | 40-60 m |" in text
    assert "| construction | 1.0 (2) | 1.0 (1) | 0.0 (1) |" in text
    assert "Macro recall of the nearest band (0-20 m): 1.0." in text
    # Metrics from before the distance field: the per-flag table only.
    old = "\n".join(_flag_lines(flag_metrics(pred, truth, np.zeros(n, int))))
    assert "| construction | 1.0 | 0.75 | 4 |" in old and "0-20 m" not in old
    assert _flag_lines({}) == []
