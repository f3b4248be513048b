"""The driving model's parts: shapes and masks, anchors, the diffusion sampler, losses,
a few training steps, save -> load, and a golden output."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from agent.model.anchors import kmeans_anchors
from agent.model.checkpoint import load_drive_model, save_drive_model
from agent.model.config import EncoderConfig, ModelConfig, PerceptionConfig
from agent.model.drive_model import DriveInputs, DriveModel
from agent.model.encoder import CameraEncoder, build_backbone
from agent.model.inference import prepare_for_inference
from agent.model.losses import (
    MAX_FLAG_POS_WEIGHT,
    LossWeights,
    Targets,
    bev_spans,
    bev_targets,
    box_penetration,
    closest_anchor,
    compute_losses,
    flag_pos_weight,
    focal_loss,
    jerk_excess,
)
from agent.model.planner import DDIMSchedule

GOLDEN = Path(__file__).parent / "golden" / "drive_model_golden.safetensors"
# Regenerate after an intended change of the model's numerics:
#   VLMDRIVE_REGEN_GOLDEN=1 .venv/bin/pytest tests/agent/test_model.py -k golden

SMALL = ModelConfig(
    d_model=32,
    heads=2,
    reasoning_dim=16,
    encoder=EncoderConfig(hidden_sizes=(8, 16), depths=(1, 1), image_height=32, image_width=64),
)


def straight_trajectories(n: int = 60, seed: int = 0) -> np.ndarray:
    """Three manoeuvres: stop, 5 m/s straight, 10 m/s drifting left; 8 poses x 0.5 s."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, 9, dtype=np.float32) * 0.5
    out = []
    for i in range(n):
        speed, drift = [(0.0, 0.0), (5.0, 0.0), (10.0, 0.4)][i % 3]
        x = speed * t + rng.normal(0, 0.1, 8)
        y = drift * t**2 + rng.normal(0, 0.05, 8)
        out.append(np.stack([x, y], axis=-1))
    return np.asarray(out, dtype=np.float32)


def make_model(cfg: ModelConfig = SMALL, k: int = 6) -> DriveModel:
    torch.manual_seed(0)
    cfg = cfg.model_copy(update={"planner": cfg.planner.model_copy(update={"num_modes": k})})
    return DriveModel(cfg, torch.from_numpy(kmeans_anchors(straight_trajectories(), k)))


def batch(model: DriveModel, b: int = 4, seed: int = 0) -> tuple[DriveInputs, Targets]:
    g = torch.Generator().manual_seed(seed)
    enc = model.cfg.encoder
    frames = torch.randint(
        0, 256, (b, enc.history + 1, 1, enc.image_height, enc.image_width, 3), generator=g
    ).to(torch.uint8)
    x = DriveInputs(
        frames=frames,
        speed_mps=torch.rand(b, generator=g) * 10,
        command=torch.randint(0, 7, (b,), generator=g),
        target_point=torch.randn(b, 2, generator=g) * 20,
        reasoning=torch.randn(b, model.cfg.reasoning_dim, generator=g),
    )
    obstacles = torch.zeros(b, 4, 8)
    obstacles[:, 0] = torch.tensor([20.0, 0.0, 0.0, 0.0, 0.0, 4.5, 2.0, 0.0])
    t = Targets(
        trajectory=torch.from_numpy(straight_trajectories(b, seed)),
        obstacles=obstacles,
        obstacle_mask=torch.tensor([[True, False, False, False]] * b),
        light_state=torch.zeros(b, dtype=torch.long),
        flags=torch.zeros(b, model.cfg.num_flags),
        intent=torch.zeros(b, dtype=torch.long),
        vlm_embedding=x.reasoning,
    )
    return x, t


def test_encoder_tokens_shape_and_history_steps() -> None:
    cfg = SMALL.encoder.model_copy(update={"history": 2, "cameras": 2})
    enc = CameraEncoder(cfg, d_model=32)
    frames = torch.zeros(3, 3, 2, cfg.image_height, cfg.image_width, 3, dtype=torch.uint8)
    tokens, pooled = enc(frames)
    cells = enc.grid[0] * enc.grid[1]
    assert tokens.shape == (3, 3 * 2 * cells, 32)
    assert pooled.shape == (3, 32)
    with pytest.raises(ValueError, match="history steps|must be"):
        enc(frames[:, :2])


def test_fused_stages_give_four_times_the_tokens_on_the_stride_16_grid() -> None:
    plain = CameraEncoder(SMALL.encoder, d_model=32)
    fused = CameraEncoder(SMALL.encoder.model_copy(update={"fuse_previous_stage": True}), 32)
    assert fused.grid == (2 * plain.grid[0], 2 * plain.grid[1])
    frames = torch.randint(
        0,
        255,
        (2, 2, 1, SMALL.encoder.image_height, SMALL.encoder.image_width, 3),
        dtype=torch.uint8,
    )
    tokens, _ = fused(frames)
    assert tokens.shape == (2, 2 * fused.grid[0] * fused.grid[1], 32)
    assert torch.isfinite(tokens).all()
    with pytest.raises(ValueError, match="resnet-tiny only|'resnet-tiny' only"):
        build_backbone(EncoderConfig(backbone="timm:resnet18", fuse_previous_stage=True))


def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="resnet-tiny"):
        build_backbone(EncoderConfig(backbone="nope"))


def test_kmeans_anchors_recover_the_manoeuvres() -> None:
    anchors = kmeans_anchors(straight_trajectories(90), k=3, seed=1)
    assert anchors.shape == (3, 8, 2)
    final_x = anchors[:, -1, 0]
    np.testing.assert_allclose(final_x, [0.0, 20.0, 40.0], atol=0.5)  # sorted stop .. fast
    with pytest.raises(ValueError, match="at least k"):
        kmeans_anchors(straight_trajectories(5), k=20)


def test_sampler_two_steps_returns_finite_trajectories() -> None:
    model = make_model().eval()
    x, _ = batch(model)
    out = model(x, sample=True, generator=torch.Generator().manual_seed(0))
    assert out.plan.trajectories.shape == (4, 6, 8, 2)
    assert out.plan.scores.shape == (4, 6)
    assert torch.isfinite(out.plan.trajectories).all()
    chosen, prob = out.plan.best()
    assert chosen.shape == (4, 8, 2) and ((prob > 0) & (prob <= 1)).all()


def test_truncated_noise_keeps_anchors_close() -> None:
    """At t = 8 of 1000 the noised anchors stay near the anchors (truncated diffusion);
    at t = 999 they are mostly noise."""
    sched = DDIMSchedule(1000)
    x0 = torch.ones(1000, 16)
    noise = torch.randn(1000, 16)
    near = sched.add_noise(x0, noise, torch.full((1000,), 8))
    far = sched.add_noise(x0, noise, torch.full((1000,), 999))
    assert (near - x0).abs().mean() < 0.15
    assert (far - x0).abs().mean() > 0.7


def test_reasoning_mask_uses_the_no_reasoning_token() -> None:
    model = make_model().eval()
    x, _ = batch(model)
    g = torch.Generator()
    none = DriveInputs(x.frames, x.speed_mps, x.command, x.target_point, None)
    masked = DriveInputs(
        x.frames,
        x.speed_mps,
        x.command,
        x.target_point,
        x.reasoning,
        torch.zeros(4, dtype=torch.bool),
    )
    # Scores, not trajectories: the offset heads start at zero, whatever the context.
    a = model(none, sample=True, generator=g.manual_seed(1)).plan.scores
    b = model(masked, sample=True, generator=g.manual_seed(1)).plan.scores
    c = model(x, sample=True, generator=g.manual_seed(1)).plan.scores
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_drive_inputs_check_shapes() -> None:
    with pytest.raises(ValueError, match="speed_mps"):
        DriveInputs(
            torch.zeros(2, 1, 1, 8, 8, 3, dtype=torch.uint8),
            torch.zeros(3),
            torch.zeros(2, dtype=torch.long),
            torch.zeros(2, 2),
        )


def test_geometry_losses() -> None:
    box = torch.tensor([[[10.0, 0.0, 0.0, 0.0, 0.0, 4.0, 2.0, 0.0]]])
    mask = torch.tensor([[True]])
    through = torch.stack([torch.arange(1, 9) * 2.5, torch.zeros(8)], dim=-1)[None].float()
    beside = through + torch.tensor([0.0, 5.0])
    assert box_penetration(through, box, mask).max() > 1.0
    assert box_penetration(beside, box, mask).max() == 0
    assert box_penetration(through, box, ~mask).max() == 0
    smooth = torch.stack([torch.arange(1, 9) * 2.5, torch.zeros(8)], dim=-1)[None].float()
    jumpy = smooth.clone()
    jumpy[0, 4, 0] += 3.0
    assert jerk_excess(smooth).item() == pytest.approx(0.0, abs=1e-4)
    assert jerk_excess(jumpy).item() > 1
    cfg = PerceptionConfig()
    occ = bev_targets(cfg, box, mask)
    rows, cols = cfg.bev_shape
    assert occ.shape == (1, 3, rows, cols)
    # The box centre (10, 0) lies in row (10 - -8) // 4 = 4, columns either side of y = 0.
    assert occ[0, 0, 4, cols // 2] == 1 and occ[0, 0, 4, cols // 2 - 1] == 1
    assert occ[0, 1:].sum() == 0 and occ[0, 0].sum() < 10


def test_bev_targets_on_a_rectangular_grid_centred_on_the_ego() -> None:
    # 2 m x 1 m cells, y in [-12.5, 12.5]: the middle column (12) spans y in [-0.5, 0.5].
    cfg = PerceptionConfig(bev_y_m=(-12.5, 12.5), bev_cell_m=2.0, bev_cell_y_m=1.0)
    assert cfg.bev_shape == (32, 25) and cfg.cell_size == (2.0, 1.0)
    xs, ys = cfg.cell_centres()
    assert xs[0] == -7.0 and ys[12] == 0.0 and ys[14] == 2.0
    # A cone (0.4 m square) on the lane line 10.6 m ahead, y = 2.0: it touches only the
    # cell x in [10, 12], y in [1.5, 2.5]; nothing in the ego's own columns (|y| <= 1.5).
    cone = torch.tensor([[[10.6, 2.0, 0.0, 0.0, 0.0, 0.4, 0.4, 2.0]]])
    occ = bev_targets(cfg, cone, torch.ones(1, 1, dtype=torch.bool))[0, 2]
    assert occ.nonzero().tolist() == [[9, 14]]
    # Moved 0.4 m inwards (y = 1.6, inner edge 1.4 m): it touches the column at y = 1 too.
    cone[0, 0, 1] = 1.6
    occ = bev_targets(cfg, cone, torch.ones(1, 1, dtype=torch.bool))[0, 2]
    assert occ.nonzero().tolist() == [[9, 13], [9, 14]]


def test_bev_spans_say_where_across_the_cell_objects_lie() -> None:
    # Shipped grid: 4 m columns split at y = 0; column 4 spans y in [0, 4], column 3 [-4, 0].
    cfg = PerceptionConfig()
    mask = torch.ones(1, 3, dtype=torch.bool)
    objects = torch.tensor(
        [
            [
                [10.0, 1.75, 0.0, 0.0, 0.0, 0.4, 0.4, 2.0],  # cone on the lane line, row 4
                [10.0, 3.0, 0.0, 0.0, 0.0, 0.4, 0.4, 2.0],  # a second cone in the same cell
                [30.0, 0.0, math.pi / 2, 0.0, 0.0, 4.0, 2.0, 0.0],  # car across the lane, row 9
            ]
        ]
    )
    spans = bev_spans(cfg, objects, mask)[0]
    occ = bev_targets(cfg, objects, mask)[0]
    assert spans.shape == (3, 2, *cfg.bev_shape)
    # The two cones: the union of [1.55, 1.95] and [2.8, 3.2] m, in quarters of the cell.
    torch.testing.assert_close(spans[2, :, 4, 4], torch.tensor([1.55 / 4, 3.2 / 4]))
    # Yawed 90 degrees, the car's 4 m length lies across: y in [-2, 2], split over columns.
    torch.testing.assert_close(spans[0, :, 9, 4], torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(spans[0, :, 9, 3], torch.tensor([0.5, 1.0]))
    # Where a class does not occupy a cell its span is 0 (the loss masks it out).
    assert bool(((spans.abs().sum(1) > 0) <= (occ > 0)).all())
    assert spans[1].abs().sum() == 0  # no pedestrian anywhere


def test_the_span_head_is_optional_trained_and_saved(tmp_path: Path) -> None:
    cfg = SMALL.model_copy(update={"perception": PerceptionConfig(bev_span=True)})
    model = make_model(cfg)
    x, t = batch(model)
    out = model(x)
    assert out.bev_span_logits is not None
    assert out.bev_span_logits.shape == (4, 3, 2, *cfg.perception.bev_shape)
    assert make_model()(x).bev_span_logits is None  # off by default: old checkpoints load
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = last = 0.0
    for step in range(30):
        terms = compute_losses(
            model, model(x, generator=torch.Generator().manual_seed(step)), t, LossWeights()
        )
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        first = first or terms["bev_span"].item()
        last = terms["bev_span"].item()
    assert last < 0.5 * first
    model.eval()
    save_drive_model(model, tmp_path, {})
    loaded, _ = load_drive_model(tmp_path)
    assert loaded.cfg.perception.bev_span
    torch.testing.assert_close(loaded(x).bev_span_logits, model(x).bev_span_logits, rtol=0, atol=0)


def test_perception_head_is_multihead_attention_and_its_query_cache_follows_the_weights() -> None:
    from agent.model.drive_model import PerceptionHead

    torch.manual_seed(0)
    head = PerceptionHead(SMALL)
    tokens, pooled = torch.randn(2, 12, SMALL.d_model), torch.randn(2, SMALL.d_model)

    def reference() -> torch.Tensor:  # the same weights through nn.MultiheadAttention
        q = head.queries.expand(2, -1, -1)
        attended = head.attn(q, tokens, tokens, need_weights=False)[0]
        return head.cells(head.norm(q + attended)).transpose(1, 2).reshape(2, *head.shape)

    with torch.no_grad():
        torch.testing.assert_close(head(tokens, pooled)[0], reference())
        before = head(tokens, pooled)[0]  # cached query projection from here on
    # An optimiser step changes the weights in place: the cache must not outlive it.
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    head(tokens, pooled)[0].square().mean().backward()
    opt.step()
    with torch.no_grad():
        after = head(tokens, pooled)[0]
        torch.testing.assert_close(after, reference())
        assert not torch.allclose(after, before)
        head.load_state_dict(PerceptionHead(SMALL).state_dict())
        torch.testing.assert_close(head(tokens, pooled)[0], reference())


def test_a_few_training_steps_reduce_the_loss() -> None:
    model = make_model()
    x, t = batch(model, b=6)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator()
    losses = []
    for step in range(40):
        out = model.forward(x, generator=g.manual_seed(step))
        loss = compute_losses(model, out, t, LossWeights())["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_the_candidate_mode_target_scores_the_denoised_candidate_nearest_the_expert() -> None:
    """mode_target "candidate": each cascade layer's focal loss targets its own denoised
    candidate nearest the expert trajectory (hand-computed here), not the nearest anchor;
    the other terms do not change, and the loss still trains."""
    model = make_model()
    x, t = batch(model, b=6)
    out = model(x, generator=torch.Generator().manual_seed(0))
    terms = compute_losses(model, out, t, LossWeights(mode_target="candidate"))
    expected, differs = [], False
    for traj_n, score in out.plan.layers:
        candidates = model.planner.denormalize(traj_n).detach()  # (B, K, T, 2)
        dist = [
            [float((candidates[b, k] - t.trajectory[b]).norm(dim=-1).mean()) for k in range(6)]
            for b in range(6)
        ]
        target = torch.tensor([int(np.argmin(row)) for row in dist])
        differs |= bool((target != closest_anchor(model.planner.anchors, t.trajectory)).any())
        expected.append(focal_loss(score, target))
    torch.testing.assert_close(terms["mode"], torch.stack(expected).mean())
    assert differs  # the two targets disagree on this batch, so the check has teeth
    anchor_terms = compute_losses(model, out, t, LossWeights())
    torch.testing.assert_close(terms["traj"], anchor_terms["traj"])
    with pytest.raises(ValueError, match="mode_target"):
        compute_losses(model, out, t, LossWeights(mode_target="nearest"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        out = model(x, generator=torch.Generator().manual_seed(step))
        loss = compute_losses(model, out, t, LossWeights(mode_target="candidate"))["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_closest_anchor_is_the_matching_manoeuvre() -> None:
    model = make_model(k=3)
    trajs = torch.from_numpy(straight_trajectories(3))
    idx = closest_anchor(model.planner.anchors, trajs)
    assert idx.tolist() == [0, 1, 2]


def test_save_load_gives_identical_outputs(tmp_path: Path) -> None:
    model = make_model().eval()
    x, _ = batch(model)
    save_drive_model(model, tmp_path, {"note": "test"})
    loaded, meta = load_drive_model(tmp_path)
    assert meta == {"note": "test"}
    a = model(x, sample=True, generator=torch.Generator().manual_seed(3))
    b = loaded(x, sample=True, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.plan.trajectories, b.plan.trajectories, rtol=0, atol=0)
    torch.testing.assert_close(a.bev_logits, b.bev_logits, rtol=0, atol=0)
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))


def test_golden_output() -> None:
    """A fixed-seed model on fixed inputs reproduces the stored trajectories and scores."""
    model = make_model().eval()
    x, _ = batch(model, seed=7)
    out = model(x, sample=True, generator=torch.Generator().manual_seed(11))
    got = {"trajectories": out.plan.trajectories, "scores": out.plan.scores}
    if os.environ.get("VLMDRIVE_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in got.items()}, str(GOLDEN))
    want = load_file(str(GOLDEN))
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-4)


def test_flag_pos_weight_balances_rare_flags_and_is_capped() -> None:
    flags = np.zeros((100, 3), dtype=bool)
    flags[:25, 0] = True  # 25 positives, 75 negatives -> 3
    flags[:1, 1] = True  # 1 positive, 99 negatives -> capped
    weight = flag_pos_weight(flags)  # column 2: no positives -> 1
    assert weight.tolist() == pytest.approx([3.0, MAX_FLAG_POS_WEIGHT, 1.0])


def test_inference_rewrite_matches_the_model_and_refuses_training_mode() -> None:
    """BatchNorm folded into the convolutions and channels-last images give the same
    trajectories, scores and perception as the model as trained (BN statistics made
    non-trivial first, so a fold that dropped them would show)."""
    model = make_model()
    x, _ = batch(model, seed=3)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # move the BN running statistics away from (0, 1)
            model(x)
    model.eval()
    with pytest.raises(ValueError, match="model.eval"):
        prepare_for_inference(make_model().train())
    with torch.no_grad():
        want = model(x, sample=True, generator=torch.Generator().manual_seed(5))
        prepare_for_inference(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder.modules())
        got = model(x, sample=True, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(got.plan.trajectories, want.plan.trajectories, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.plan.scores, want.plan.scores, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.bev_logits, want.bev_logits, rtol=1e-4, atol=1e-4)
