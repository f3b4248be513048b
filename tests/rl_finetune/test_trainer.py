"""The fine-tuning job end to end on a tiny DriveModel and a tiny training scenario:
`vlmdrive finetune` with the vector env, resume, 2 local Ray workers, config errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from test_policy import make_model
from test_rollout import TINY_SCENARIO
from typer.testing import CliRunner

from agent.model.checkpoint import load_drive_model, save_drive_model
from rl_finetune.config import FinetuneConfig, load_finetune_config
from rl_finetune.guarded import GUARD_REASONS
from rl_finetune.policy import init_policy, load_policy
from rl_finetune.trainer import FinetuneTrainer
from vlmdrive.cli import app

ROLLOUT_STEPS = 8
ENVS = 2
ITERATION_STEPS = ROLLOUT_STEPS * ENVS


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the 2-core test machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def init_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("finetune") / "init"
    save_drive_model(make_model(), directory, {"note": "imitation"})
    return directory


def write_config(tmp_path: Path, init: Path, **over: Any) -> Path:
    """A two-iteration job: 2 envs x 8 steps, 6-step episodes (ends and truncations in
    every rollout), one update epoch of two minibatches, a checkpoint every iteration."""
    (tmp_path / "tiny_rl.yaml").write_text(TINY_SCENARIO)
    doc: dict[str, Any] = {
        "init": str(init),
        "suite": str(tmp_path / "tiny_rl.yaml"),
        "out": str(tmp_path / "run"),
        "total_steps": 2 * ITERATION_STEPS,
        "envs": ENVS,
        "threads": 1,
        "max_episode_steps": 6,
        "checkpoint_every": 1,
        "ppo": {"rollout_steps": ROLLOUT_STEPS, "epochs": 1, "minibatch": 8},
    }
    doc.update(over)
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def progress(run: Path) -> dict[str, Any]:
    return json.loads((run / "state" / "progress.json").read_text())


def adam_steps(run: Path) -> set[float]:
    """Adam's step counter of every parameter in the saved state."""
    state = progress(run)["optimizer"]["state"]
    return {entry["step"] for entry in state.values()}


def test_two_iterations_with_the_vector_env_write_a_loadable_checkpoint(
    tmp_path: Path, init_checkpoint: Path
) -> None:
    config = write_config(tmp_path, init_checkpoint)
    result = CliRunner().invoke(app, ["finetune", "--config", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"

    model, meta = load_drive_model(run / "checkpoint")  # what the Leaderboard agent does
    summary = meta["finetune"]
    assert summary["iterations"] == 2 and summary["steps"] == 2 * ITERATION_STEPS
    assert summary["episodes"] >= 2 * ENVS  # 6-step episodes in 8-step rollouts
    assert summary["env_crashes"] == 0 and summary["dropped_workers"] == 0
    init, _ = load_drive_model(init_checkpoint)
    moved = [
        not torch.equal(a, b)
        for a, b in zip(model.planner.parameters(), init.planner.parameters(), strict=True)
    ]
    assert any(moved)  # PPO updated the planner
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.encoder.parameters(), init.encoder.parameters(), strict=True)
    )
    assert load_policy(run / "checkpoint").cfg == FinetuneConfig().policy

    assert progress(run)["iteration"] == 2 and progress(run)["global_step"] == 32
    assert adam_steps(run) == {4.0}  # 2 minibatches x 2 iterations

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in (
        "losses/policy",
        "losses/value",
        "losses/entropy",
        "losses/kl_ref",
        "losses/approx_kl",
        "losses/clip_fraction",
        "charts/SPS",
        "charts/episode_driving_score",
        "charts/episode_return",
        "charts/shield_interventions",
        "charts/shield_intervention_rate",
        "charts/shield_interventions_by_reason/collision",
        "charts/shield_interventions_by_reason/outside_lanes",
        "charts/env_crashes",
    ):
        assert tag in tags, tag
    assert [e.step for e in events.Scalars("charts/SPS")] == [16, 32]
    by_reason = summary["shield_interventions_by_reason"]
    assert set(by_reason) == {"nonfinite", "collision", "red_light", "outside_lanes"}
    rate = summary["shield_intervention_rate"]
    assert sum(by_reason.values()) == round(rate * 2 * ITERATION_STEPS)  # no crashes: all valid


def test_the_agents_guard_in_the_loop_is_counted_and_costs_reward(
    tmp_path: Path, init_checkpoint: Path
) -> None:
    """safety.enabled: the envs drive the guard's decisions; its interventions are logged
    per reason, summed in the summary, and each costs reward.guard_intervention."""
    config = write_config(
        tmp_path,
        init_checkpoint,
        safety={"enabled": True, "guard": {"raise_errors": True}},
        reward={"guard_intervention": 0.5},
    )
    cfg = load_finetune_config(config)
    summary = FinetuneTrainer(cfg, progress=False).run()
    assert summary["iterations"] == 2
    rate, by_reason = summary["guard_intervention_rate"], summary["guard_interventions_by_reason"]
    assert 0.0 <= rate <= 1.0
    assert sum(by_reason.values()) == round(rate * 2 * ITERATION_STEPS)
    assert set(by_reason) <= set(GUARD_REASONS) - {"ACCEPTED"}

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert "charts/guard_intervention_rate" in events.Tags()["scalars"]

    rewards = np.array([[1.0, 1.0], [0.0, 2.0]], np.float32)
    batch = SimpleNamespace(
        rewards=rewards,
        policy_outputs={"guard_intervened": np.array([[True, False], [False, True]])},
    )
    penalised = FinetuneTrainer(cfg, progress=False)._rewards(batch)  # type: ignore[arg-type]
    np.testing.assert_allclose(penalised, [[0.5, 1.0], [0.0, 1.5]])
    # Without the guard in the loop the env's rewards are used as they are.
    del batch.policy_outputs["guard_intervened"]
    assert FinetuneTrainer(cfg, progress=False)._rewards(batch) is rewards  # type: ignore[arg-type]


def test_resume_continues_from_the_saved_step(tmp_path: Path, init_checkpoint: Path) -> None:
    cfg = load_finetune_config(write_config(tmp_path, init_checkpoint))
    first = FinetuneTrainer(cfg.model_copy(update={"total_steps": ITERATION_STEPS}), progress=False)
    assert first.run()["iterations"] == 1
    run = tmp_path / "run"
    assert progress(run)["global_step"] == ITERATION_STEPS and adam_steps(run) == {2.0}
    saved = load_policy(run / "state" / "policy")

    summary = FinetuneTrainer(cfg, progress=False).run(resume=True)
    assert summary["iterations"] == 2 and summary["steps"] == 2 * ITERATION_STEPS
    assert progress(run)["iteration"] == 2
    assert adam_steps(run) == {4.0}  # Adam continued, it did not restart
    assert summary["episodes"] >= 2 * ENVS  # the first run's episodes are counted too
    resumed = load_policy(run / "checkpoint")
    assert not all(
        torch.equal(a, b)
        for a, b in zip(
            saved.model.planner.parameters(), resumed.model.planner.parameters(), strict=True
        )
    )

    # Resuming a finished job does nothing more.
    again = FinetuneTrainer(cfg, progress=False).run(resume=True)
    assert again["iterations"] == 2 and again["steps"] == 2 * ITERATION_STEPS


def test_two_iterations_with_two_local_ray_workers(tmp_path: Path, init_checkpoint: Path) -> None:
    ray = pytest.importorskip("ray")
    cfg = load_finetune_config(write_config(tmp_path, init_checkpoint, envs=1, workers=2))
    assert cfg.use_ray
    summary = FinetuneTrainer(cfg, progress=False).run()
    assert not ray.is_initialized()  # the local Ray was shut down
    assert summary["iterations"] == 2 and summary["steps"] == 2 * ROLLOUT_STEPS * 2
    assert summary["dropped_workers"] == 0 and summary["episodes"] >= 2
    model, meta = load_drive_model(tmp_path / "run" / "checkpoint")
    assert meta["finetune"]["steps"] == 32


def test_the_policy_rate_reaches_the_envs_and_the_guard(
    tmp_path: Path, init_checkpoint: Path
) -> None:
    """policy_hz 2: every env holds an action for 10 ticks and the guard's clock advances
    0.5 s a step (the default, 10 Hz: 2 ticks, 0.1 s)."""
    for hz, repeat in ((2, 10), (10, 2)):
        config = write_config(tmp_path, init_checkpoint, policy_hz=hz, safety={"enabled": True})
        cfg = load_finetune_config(config)
        assert cfg.action_repeat == repeat
        policy = init_policy(cfg.init, cfg.policy)
        rollouts = FinetuneTrainer(cfg, progress=False)._rollouts(policy, torch.Generator(), 0)
        try:
            make_env = rollouts.collector.env_fns[0].args[0]  # type: ignore[attr-defined]
            assert make_env.keywords["action_repeat"] == repeat
            assert rollouts.acting.guards.dt_s == pytest.approx(1.0 / hz)  # type: ignore[attr-defined]
        finally:
            rollouts.close()


def test_a_bad_config_key_names_file_and_line(tmp_path: Path, init_checkpoint: Path) -> None:
    config = write_config(tmp_path, init_checkpoint)
    text = config.read_text().replace("rollout_steps:", "rollout_step:")
    config.write_text(text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "rollout_step:" in s)
    result = CliRunner().invoke(app, ["finetune", "--config", str(config)])
    assert result.exit_code == 2
    assert f"{config}:{line}:" in result.output and "rollout_step" in result.output
    assert "Traceback" not in result.output

    config.write_text(text.replace("rollout_step:", "rollout_steps:"))
    result = CliRunner().invoke(app, ["finetune", "--config", str(config), "--envs", "0"])
    assert result.exit_code == 2 and "--envs" in result.output
    result = CliRunner().invoke(
        app, ["finetune", "--config", str(config), "--suite", "scenarios/library/eval"]
    )
    assert result.exit_code == 2 and "kept apart" in result.output

    config.write_text(text.replace("rollout_step:", "rollout_steps:") + "policy_hz: 3\n")
    result = CliRunner().invoke(app, ["finetune", "--config", str(config)])
    assert result.exit_code == 2 and "policy_hz" in result.output and str(config) in result.output
    assert "Traceback" not in result.output


def test_ctrl_c_ends_with_a_message_not_a_traceback(
    tmp_path: Path, init_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: FinetuneTrainer, resume: bool = False) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(FinetuneTrainer, "run", interrupted)
    config = write_config(tmp_path, init_checkpoint)
    result = CliRunner().invoke(app, ["finetune", "--config", str(config), "--no-progress"])
    assert result.exit_code == 130
    assert "interrupted" in result.output and "--resume" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "config", sorted((Path(__file__).parents[2] / "configs").glob("finetune*.yaml")), ids=str
)
def test_every_finetune_config_in_the_repository_loads(config: Path) -> None:
    """The shipped default and the README's measured recipes stay valid configs that name
    files of this repository."""
    cfg = load_finetune_config(config)
    repo = config.parents[1]
    assert (repo / cfg.init / "model.safetensors").is_file()
    assert (repo / cfg.suite).exists()
