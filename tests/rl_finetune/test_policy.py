"""The PPO policy around a tiny untrained DriveModel: the candidates are the agent's,
log-probabilities are consistent between acting and the update, the KL to the imitation
policy, gradients, checkpoints the Leaderboard agent loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Normal

from agent.model.anchors import kmeans_anchors
from agent.model.checkpoint import VLM_DIR, load_drive_model, save_drive_model
from agent.model.config import EncoderConfig, ModelConfig
from agent.model.drive_model import DriveInputs, DriveModel
from rl_finetune.config import PolicyConfig
from rl_finetune.policy import (
    HISTORY_STRIDE,
    POLICY_CONFIG,
    POLICY_WEIGHTS,
    FrameHistory,
    PlannerPolicy,
    PolicyObs,
    denoise,
    draw_noise,
    init_policy,
    load_policy,
    save_policy,
)

K = 6
SMALL = ModelConfig(
    d_model=32,
    heads=2,
    reasoning_dim=16,
    encoder=EncoderConfig(
        hidden_sizes=(8, 16), depths=(1, 1), image_height=32, image_width=64, history=1
    ),
)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the 2-core test machine is shared (thread contention makes the
    tiny model 100x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def anchors(k: int = K) -> torch.Tensor:
    """k-means anchors over three manoeuvres: stop, 5 m/s straight, 10 m/s drifting left."""
    rng = np.random.default_rng(0)
    t = np.arange(1, 9, dtype=np.float32) * 0.5
    trajs = []
    for i in range(60):
        speed, drift = [(0.0, 0.0), (5.0, 0.0), (10.0, 0.4)][i % 3]
        x = speed * t + rng.normal(0, 0.3, 8)
        y = drift * t**2 + rng.normal(0, 0.2, 8)
        trajs.append(np.stack([x, y], axis=-1))
    return torch.from_numpy(kmeans_anchors(np.asarray(trajs, dtype=np.float32), k))


def make_model(seed: int = 0) -> DriveModel:
    torch.manual_seed(seed)
    cfg = SMALL.model_copy(update={"planner": SMALL.planner.model_copy(update={"num_modes": K})})
    model = DriveModel(cfg, anchors())
    with torch.no_grad():  # the offset heads start at zero: give the candidates some shape
        for layer in model.planner.layers:
            layer.offset[-1].weight.normal_(0, 0.05)
    return model.eval()


def make_obs(b: int = 4, seed: int = 0, history: bool = True) -> PolicyObs:
    g = torch.Generator().manual_seed(seed)
    shape = (b, 2, 32, 64, 4) if history else (b, 32, 64, 3)  # BGRA with history, or BGR
    return PolicyObs(
        image=torch.randint(0, 256, shape, generator=g).to(torch.uint8),
        speed_mps=torch.rand(b, generator=g) * 10,
        command=torch.randint(0, 7, (b,), generator=g),
        target_point=torch.randn(b, 2, generator=g) * 20,
    )


def test_candidates_are_the_agents_sampler_output() -> None:
    """With the same generator, the policy's candidates and scores are what the Leaderboard
    agent's `from_tokens(sample=True)` gives with the distilled reasoning (to the float
    rounding of autograd vs no-grad attention kernels; `denoise` without grad: exactly)."""
    model = make_model()
    policy = PlannerPolicy(model)
    obs = make_obs()
    step = policy.act(obs, torch.Generator().manual_seed(5), deterministic=True)
    with torch.no_grad():
        tokens, pooled = model.encoder(obs.image)
        heads = model.heads(tokens, pooled)
        x = DriveInputs(
            obs.image[:, -1:], obs.speed_mps, obs.command, obs.target_point, heads["emb"]
        )
        out = model.from_tokens(
            tokens, pooled, x, sample=True, generator=torch.Generator().manual_seed(5), heads=heads
        )
    torch.testing.assert_close(step.candidates, out.plan.trajectories, rtol=0, atol=1e-4)
    torch.testing.assert_close(step.mode_logits, out.plan.scores, rtol=0, atol=1e-5)
    chosen, _ = out.plan.best()
    torch.testing.assert_close(step.trajectory, chosen, rtol=0, atol=1e-4)
    # the noise act drew is the planner's draw, and denoise() reproduces the sample
    noise = draw_noise(model, len(obs), torch.Generator().manual_seed(5))
    torch.testing.assert_close(step.noise, noise, rtol=0, atol=0)
    with torch.no_grad():
        context, state = model.context(tokens, x)
        trajectories, scores = denoise(model.planner, context, state, noise)
    torch.testing.assert_close(trajectories, out.plan.trajectories, rtol=0, atol=0)
    torch.testing.assert_close(scores, out.plan.scores, rtol=0, atol=0)


def test_act_shapes_and_the_action_is_candidate_plus_residual() -> None:
    policy = PlannerPolicy(make_model())
    step = policy.act(make_obs(b=3), torch.Generator().manual_seed(0))
    t = policy.model.cfg.planner.num_poses
    assert step.trajectory.shape == (3, t, 2) and step.residual.shape == (3, t, 2)
    assert step.candidates.shape == (3, K, t, 2) and step.noise.shape == (3, K, t, 2)
    assert step.mode.shape == step.logp.shape == step.value.shape == (3,)
    assert step.mode_logits.shape == (3, K)
    chosen = step.candidates[torch.arange(3), step.mode]
    torch.testing.assert_close(step.trajectory, chosen + step.residual)
    assert 0.05 < step.residual.std().item() < 1.0  # ~0.3 m at init
    assert torch.isfinite(step.logp).all()
    assert (step.value == 0).all()  # the value head's last layer starts at zero


def test_evaluate_reproduces_the_logp_of_the_sampled_action() -> None:
    policy = PlannerPolicy(make_model())
    obs = make_obs(b=5, seed=1)
    step = policy.act(obs, torch.Generator().manual_seed(2))
    ev = policy.evaluate(obs, step.mode, step.trajectory, step.noise)
    torch.testing.assert_close(ev.logp, step.logp, rtol=0, atol=1e-5)
    torch.testing.assert_close(ev.value, step.value, rtol=0, atol=1e-5)
    torch.testing.assert_close(ev.mode_logits, step.mode_logits, rtol=0, atol=1e-5)
    # A minibatch of other rows recomputes the same candidates from the stored noise; a
    # different batch size changes the kernels' float rounding (~1e-5 m on the candidates,
    # times residual / std^2 in the log-probability): ratios within 1e-3 of 1.
    rows = torch.tensor([3, 0])
    sub = policy.evaluate(obs.index(rows), step.mode[rows], step.trajectory[rows], step.noise[rows])
    torch.testing.assert_close(sub.logp, step.logp[rows], rtol=0, atol=1e-3)
    # logp = log p(mode) + log N(residual; 0, std): check against torch.distributions
    std = torch.full_like(step.residual, 0.3)
    want = Categorical(logits=step.mode_logits).log_prob(step.mode) + Normal(0.0, std).log_prob(
        step.residual
    ).sum((-1, -2))
    torch.testing.assert_close(ev.logp, want, rtol=0, atol=1e-4)
    entropy = Categorical(logits=step.mode_logits).entropy() + Normal(0.0, std).entropy().sum(
        (-1, -2)
    )
    torch.testing.assert_close(ev.entropy, entropy, rtol=0, atol=1e-4)


def test_a_cached_encoding_gives_the_same_evaluation_and_gradients() -> None:
    policy = PlannerPolicy(make_model())
    obs = make_obs(b=4, seed=3)
    step = policy.act(obs, torch.Generator().manual_seed(4))
    fresh = policy.evaluate(obs, step.mode, step.trajectory, step.noise)
    cached = policy.evaluate(
        obs, step.mode, step.trajectory, step.noise, encoded=policy.encode(obs)
    )
    for name in ("logp", "value", "mode_logits", "kl_ref", "entropy"):
        torch.testing.assert_close(getattr(cached, name), getattr(fresh, name))
    grads = []
    for ev in (fresh, cached):
        policy.zero_grad()
        ev.logp.sum().backward(retain_graph=True)
        grads.append(
            [p.grad.clone() for p in policy.model.planner.parameters() if p.grad is not None]
        )
    assert grads[0] and len(grads[0]) == len(grads[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    # Rows of a cached batch are the rows' own encodings.
    rows = torch.tensor([2, 0])
    part = policy.encode(obs).select(rows)
    torch.testing.assert_close(
        part.tokens, policy.encode(obs.index(rows)).tokens, atol=1e-5, rtol=0
    )
    with pytest.raises(ValueError, match="train_encoder"):
        PlannerPolicy(make_model(), PolicyConfig(train_encoder=True)).encode(obs)


def test_deterministic_act_takes_the_argmax_mode_without_residual() -> None:
    policy = PlannerPolicy(make_model(), PolicyConfig(temperature=2.0))
    step = policy.act(make_obs(), torch.Generator().manual_seed(0), deterministic=True)
    assert torch.equal(step.mode, step.mode_logits.argmax(-1))
    assert (step.residual == 0).all()
    torch.testing.assert_close(step.trajectory, step.candidates[torch.arange(4), step.mode])


def test_kl_to_reference_is_zero_at_init_and_grows_when_the_policy_moves() -> None:
    policy = PlannerPolicy(make_model())
    obs = make_obs()
    step = policy.act(obs, torch.Generator().manual_seed(0))
    kl = policy.kl_to_reference(obs, step.noise)
    torch.testing.assert_close(kl, torch.zeros(4), rtol=0, atol=1e-6)
    assert policy.evaluate(obs, step.mode, step.trajectory, step.noise).kl_ref.abs().max() < 1e-6

    # Move only the score head (the candidates do not depend on it): the KL is the
    # categorical KL over modes.
    with torch.no_grad():
        weight = policy.model.planner.layers[-1].score[-1].weight
        weight.add_(3 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    kl = policy.kl_to_reference(obs, step.noise)
    ref = policy.reference
    with torch.no_grad():
        tokens, _ = ref.encoder(obs.image)
        x = DriveInputs(
            obs.image[:, -1:], obs.speed_mps, obs.command, obs.target_point, ref.distill(tokens)[0]
        )
        context, state = ref.context(tokens, x)
        _, ref_scores = denoise(ref.planner, context, state, step.noise)
    new_logits = policy.act(obs, deterministic=True, noise=step.noise).mode_logits
    want = torch.distributions.kl_divergence(
        Categorical(logits=new_logits), Categorical(logits=ref_scores)
    )
    assert (want > 1e-4).all()
    torch.testing.assert_close(kl, want, rtol=1e-4, atol=1e-5)

    # Move the std: the Gaussian part, sum over T x 2 of log(s0/s) + s^2 / (2 s0^2) - 1/2.
    policy2 = PlannerPolicy(make_model())
    with torch.no_grad():
        policy2.log_std.fill_(np.log(0.6))
    per_dim = np.log(0.3 / 0.6) + 0.6**2 / (2 * 0.3**2) - 0.5
    kl2 = policy2.kl_to_reference(obs, step.noise)
    torch.testing.assert_close(kl2, torch.full((4,), 16 * per_dim), rtol=1e-5, atol=1e-5)


def test_gradients_reach_the_planner_not_the_frozen_encoder() -> None:
    policy = PlannerPolicy(make_model())
    policy.train()
    assert not policy.model.training and not policy.model.encoder.training  # BatchNorm frozen
    assert policy.value_head.training
    obs = make_obs()
    step = policy.act(obs, torch.Generator().manual_seed(0))
    ev = policy.evaluate(obs, step.mode, step.trajectory, step.noise)
    (ev.logp.sum() + ev.value.sum() + ev.kl_ref.sum()).backward()
    planner_grads = [p.grad for p in policy.model.planner.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in planner_grads)
    assert policy.log_std.grad is not None and policy.log_std.grad.abs().sum() > 0
    assert all(p.grad is None for p in policy.model.encoder.parameters())
    assert all(not p.requires_grad for p in policy.reference.parameters())
    groups = policy.param_groups(lr=1e-5, value_lr=1e-3)
    n_policy = sum(p.numel() for p in groups[0]["params"])
    assert 0 < n_policy < sum(p.numel() for p in policy.model.parameters())
    assert any(p is policy.log_std for p in groups[1]["params"])


def test_without_train_candidates_only_the_scores_learn() -> None:
    policy = PlannerPolicy(make_model(), PolicyConfig(train_candidates=False, learn_std=False))
    obs = make_obs()
    step = policy.act(obs, torch.Generator().manual_seed(0))
    ev = policy.evaluate(obs, step.mode, step.trajectory, step.noise)
    ev.logp.sum().backward()
    last = policy.model.planner.layers[-1]
    assert all(p.grad is None and not p.requires_grad for p in last.offset.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in last.score.parameters())
    assert policy.log_std.grad is None
    assert all(p is not policy.log_std for g in policy.param_groups(1.0, 1.0) for p in g["params"])
    # Nothing the candidates depend on can move: after a large optimiser step on the
    # scores, the candidates are the imitation model's, to the bit, and the scores are not.
    trainable = {id(p) for g in policy.param_groups(1.0, 1.0)[:1] for p in g["params"]}
    scores = {id(p) for layer in policy.model.planner.layers for p in layer.score.parameters()}
    assert trainable == scores
    optimizer = torch.optim.SGD(policy.param_groups(1.0, 1.0), lr=1.0)
    optimizer.step()
    after = policy.act(obs, torch.Generator().manual_seed(0))
    torch.testing.assert_close(after.candidates, step.candidates, rtol=0, atol=0)
    assert not torch.allclose(after.mode_logits, step.mode_logits)


def test_single_frame_is_repeated_as_history() -> None:
    policy = PlannerPolicy(make_model())
    single = make_obs(history=False)
    stacked = PolicyObs(
        single.image[:, :, 0].expand(-1, 2, -1, -1, -1),
        single.speed_mps,
        single.command,
        single.target_point,
    )
    assert single.image.shape == (4, 1, 1, 32, 64, 3)
    a = policy.act(single, torch.Generator().manual_seed(0), deterministic=True)
    b = policy.act(stacked, torch.Generator().manual_seed(0), deterministic=True)
    torch.testing.assert_close(a.candidates, b.candidates, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="history steps"):
        policy.act(
            PolicyObs(
                torch.zeros(1, 3, 32, 64, 3, dtype=torch.uint8),
                torch.zeros(1),
                torch.zeros(1),
                torch.zeros(1, 2),
            )
        )


def test_policy_obs_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="target_point"):
        PolicyObs(np.zeros((2, 8, 8, 3), np.uint8), np.zeros(2), np.zeros(2), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="uint8"):
        PolicyObs(np.zeros((2, 8, 8, 3)), np.zeros(2), np.zeros(2), np.zeros((2, 2)))
    obs = PolicyObs(
        np.zeros((2, 8, 8, 4), np.uint8), np.zeros(2), np.zeros(2, np.int64), np.zeros((2, 2))
    )
    assert obs.image.shape == (2, 1, 1, 8, 8, 3) and obs.speed_mps.dtype == torch.float32
    assert len(PolicyObs.cat([obs, obs.index(slice(0, 1))])) == 3


def test_frame_history_stacks_frames_half_a_second_apart() -> None:
    assert HISTORY_STRIDE == 5  # 0.5 s at 10 Hz
    hist = FrameHistory(envs=2, steps=2)
    frames = [np.full((2, 1, 1, 3), i, np.uint8) for i in range(8)]
    first = np.array([True, True])
    out = hist.push(frames[0], first)
    assert out.shape == (2, 2, 1, 1, 3) and (out == 0).all()  # the first frame fills it
    for i in range(1, 8):
        # env 1 restarts at step 6
        out = hist.push(frames[i], np.array([False, i == 6]))
    assert out[0, :, 0, 0, 0].tolist() == [2, 7]  # 5 steps back, current
    assert out[1, :, 0, 0, 0].tolist() == [6, 7]  # restarted: its first frame, current


def test_save_loads_unchanged_with_load_drive_model(tmp_path: Path) -> None:
    init = tmp_path / "init"
    save_drive_model(make_model(), init, {"note": "imitation"})
    (init / VLM_DIR).mkdir()
    (init / VLM_DIR / "config.json").write_text("{}")
    policy = init_policy(init, PolicyConfig(residual_std_m=0.25))
    with torch.no_grad():  # a "fine-tuning" step
        policy.model.planner.layers[-1].score[-1].bias.add_(0.5)
        policy.log_std.add_(0.1)
        policy.value_head[-1].bias.fill_(2.0)
    out = tmp_path / "out"
    save_policy(policy, out, {"finetune": {"steps": 10}})
    assert (out / VLM_DIR / "config.json").is_file()
    assert (out / POLICY_WEIGHTS).is_file() and (out / POLICY_CONFIG).is_file()
    assert not list(out.glob("*.pt")) and not list(out.glob("*.pkl"))

    loaded, meta = load_drive_model(out)
    assert meta == {"finetune": {"steps": 10}}
    obs = make_obs()
    x = DriveInputs(obs.image, obs.speed_mps, obs.command, obs.target_point)
    with torch.no_grad():
        a = policy.model(x, sample=True, generator=torch.Generator().manual_seed(3))
        b = loaded(x, sample=True, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.plan.trajectories, b.plan.trajectories, rtol=0, atol=0)
    torch.testing.assert_close(a.plan.scores, b.plan.scores, rtol=0, atol=0)

    again = load_policy(out)  # reference from the recorded init
    assert again.cfg.residual_std_m == 0.25
    torch.testing.assert_close(again.log_std, policy.log_std)
    step_a = policy.act(obs, torch.Generator().manual_seed(1))
    step_b = again.act(obs, torch.Generator().manual_seed(1))
    torch.testing.assert_close(step_a.logp, step_b.logp, rtol=0, atol=1e-6)
    torch.testing.assert_close(step_b.value, torch.full((4,), 2.0))
    kl_a = policy.kl_to_reference(obs, step_a.noise)
    kl_b = again.kl_to_reference(obs, step_a.noise)
    assert (kl_a > 0).all()
    torch.testing.assert_close(kl_a, kl_b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="init checkpoint"):
        save_policy(policy, init)
