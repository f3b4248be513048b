"""The model card (`<checkpoint>/README.md`), written from what the checkpoint directory
holds: `model.yaml` (config + training summary), `open_loop.json` (vlmdrive eval-open),
`closed_loop.json` (agent vs expert, vlmdrive eval) and `speed.json` (bench_agent)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.data.collect import collect_command
from agent.data.dataset import dataset_summary
from agent.model.checkpoint import VLM_DIR, read_config


def _wall_line(training: dict[str, Any]) -> str:
    minutes = f"{training.get('train_wall_s', 0) / 60:.1f} min on 2 CPU cores"
    if training.get("init"):
        return (
            f"- Fine-tuned from `{training['init']}` (the training config's `init`); wall "
            f"time of the fine-tune alone: {minutes}."
        )
    if len(training.get("datasets") or []) > 1:
        return (
            f"- Wall time of this round: {minutes} (`make train` first collects the expert "
            "data, trains round 1 and collects the DAgger round: see the README)."
        )
    return f"- Wall time: {minutes} (`make train` also collects the data first)."


def _dataset_line(directory: str, recorded: dict[str, Any] | None) -> str:
    """One training dataset: episodes, frames, DAgger frames and the command that made it,
    as recorded when the model trained (`dataset_summary`). Checkpoints from before that
    record get the folder's `index.json` as it is now, marked as such; the bare name when
    neither exists."""
    summary, note = recorded, ""
    if summary is None:
        summary = dataset_summary(directory)
        note = " (the folder as it is now, not recorded at training time)"
    if summary is None:
        return f"  - `{directory}`"
    dagger = summary["policy_frames"]
    driver = f", {dagger} of them with the model driving (DAgger)" if dagger else ""
    return (
        f"  - `{directory}`: {summary['episodes']} episodes, {summary['frames']} frames"
        f"{driver}; `{collect_command(summary['args'])}`{note}"
    )


def _frames_line(training: dict[str, Any]) -> str:
    """Where the training frames came from: each dataset with its collection command."""
    head = f"- Frames: {training.get('frames', '?')} from {training.get('episodes', '?')} episodes"
    datasets = training.get("datasets") or ["data/train"]
    recorded = training.get("dataset_summaries") or [None] * len(datasets)
    lines = [f"{head}, the expert labelling every frame (dataset cards `<dir>/README.md`):"]
    lines += [_dataset_line(d, r) for d, r in zip(datasets, recorded, strict=True)]
    return "\n".join(lines)


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _size_mb(directory: Path) -> float:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file()) / 1e6


def _flag_lines(source_flags: dict[str, Any]) -> list[str]:
    """The per-flag tables of the card from one head's `flag_metrics`."""
    flags = source_flags.get("per_flag", {})
    if not flags:
        return []
    lines = ["", "Per-flag precision / recall (distilled head):", ""]
    lines.append(
        "| flag | precision | frame recall | frames | event recall | events | frames to detect |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for name, v in flags.items():
        lines.append(
            f"| {name} | {v['precision']} | {v['recall']} | {v['support']} | "
            f"{v.get('event_recall', '-')} | {v.get('events', '-')} | "
            f"{v.get('frames_to_detect', '-')} |"
        )
    if source_flags.get("macro_event_recall") is not None:
        lines += [
            "",
            "Event recall: an event is one hazard or weather spell (consecutive flagged "
            "frames of an episode); it counts as recalled when at least one of its frames "
            "is flagged. Frames to detect: mean frames (0.5 s each) from the event's "
            "first frame to its first flagged one. Macro event recall "
            f"{source_flags['macro_event_recall']} (the target, >= 0.9, is set on the "
            "frame recall above).",
        ]
    if source_flags.get("macro_recall_near") is not None:
        bands = list(next(iter(flags.values()))["recall_by_distance"])
        lines += [
            "",
            "Frame recall by the hazard's distance along the route (frames in "
            "brackets; weather flags count as 0 m):",
            "",
            "| flag | " + " | ".join(bands) + " |",
            "|---|" + "---|" * len(bands),
        ]
        for name, v in flags.items():
            cells = [f"{v['recall_by_distance'][b]} ({v['support_by_distance'][b]})" for b in bands]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Macro recall of the nearest band ({bands[0]}): {source_flags['macro_recall_near']}.",
        ]
    return lines


def write_model_card(checkpoint: str | Path) -> Path:
    directory = Path(checkpoint)
    cfg, meta = read_config(directory)
    training = meta.get("training", {})
    open_loop = _load(directory / "open_loop.json")
    closed = _load(directory / "closed_loop.json")
    speed = _load(directory / "speed.json")
    enc, pl, pe = cfg.encoder, cfg.planner, cfg.perception
    lines = [
        "# vlmdrive-tiny",
        "",
        "End-to-end driving model for the vlmdrive agent: a camera encoder, a tiny "
        "vision-language model (VLM) that writes what it sees and intends, and a "
        "truncated-diffusion trajectory planner. Trained from scratch on this repository's "
        "embedded simulator with `make train` (CPU only). Files: `model.safetensors` + "
        "`model.yaml` (driving model), `vlm/` (a Hugging Face image-text-to-text model "
        "directory, loadable with `AutoModelForImageTextToText` / `AutoProcessor`).",
        "",
        "## Architecture",
        "",
        f"- Encoder: `{enc.backbone}` (transformers ResNet, stages {list(enc.hidden_sizes)}), "
        f"{enc.cameras} camera(s) at {enc.image_width}x{enc.image_height}, history {enc.history} "
        f"frame(s) 0.5 s apart, d_model {cfg.d_model}"
        + (
            "; the last two stages fused FPN-style (stride-16 visual tokens)."
            if enc.fuse_previous_stage
            else "."
        ),
        f"- Planner: truncated diffusion over {pl.num_modes} k-means anchors of {pl.num_poses} poses "
        f"(0.5 s); anchors noised to t={pl.infer_t} of {pl.train_timesteps}, {pl.denoise_steps} DDIM "
        f"steps, {pl.decoder_layers}-layer cascade decoder; conditioned on visual tokens, the "
        "reasoning embedding, speed, command and target point.",
        f"- Heads: BEV occupancy ahead ({' / '.join(pe.bev_classes)}; x {list(pe.bev_x_m)} m, "
        f"y {list(pe.bev_y_m)} m, cells {pe.cell_size[0]:g} x {pe.cell_size[1]:g} m)"
        + (", object boxes with velocities (one per cell and class)" if pe.objects else "")
        + (", the lanes beside the route" if pe.lanes else "")
        + " and light state for the safety layer; a distillation head predicting the VLM "
        "embedding, flags and intent.",
        f"- Size on disk: {_size_mb(directory):.1f} MB (VLM {_size_mb(directory / VLM_DIR):.1f} MB).",
        "",
        "## Training",
        "",
        _frames_line(training),
        _wall_line(training),
    ]
    for stage in ("vlm", "frozen", "lora", "joint"):
        if stage in training:
            s = training[stage]
            shown = ", ".join(
                f"{k} {v}"
                for k, v in s.items()
                if k in ("total", "traj", "lm_loss", "loss", "wall_s")
            )
            lines.append(f"- Stage `{stage}`: {shown}")
    lines += ["", "## Open-loop evaluation (held-out eval-suite frames, `vlmdrive eval-open`)", ""]
    if open_loop:
        lines.append(f"{open_loop['frames']} frames.")
        lines.append("")
        lines.append(
            "| reasoning | L2@1s | L2@2s | L2@3s | best of K L2@3s | collision rate "
            "| flag macro recall | intent acc |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for source in ("vlm", "distilled"):
            if source in open_loop:
                m = open_loop[source]
                best_of_k = f"{m['minL2@3s']:.2f}" if "minL2@3s" in m else "-"  # older files
                lines.append(
                    f"| {source} | {m['L2@1s']:.2f} | {m['L2@2s']:.2f} | {m['L2@3s']:.2f} | "
                    f"{best_of_k} | {m['collision_rate']:.3f} | {m['flags']['macro_recall']} | "
                    f"{m['intent_accuracy']:.3f} |"
                )
        if "text" in open_loop.get("vlm", {}):
            t = open_loop["vlm"]["text"]
            lines += [
                "",
                f"Reasoning text (VLM, {t['frames']} frames): ROUGE-L F1 {t['rouge_l_f1']:.3f}, exact match {t['exact_match']:.3f}.",
            ]
            for ex in t["examples"][:2]:
                lines.append(f'- generated: "{ex["generated"]}" / reference: "{ex["reference"]}"')
        source_flags = open_loop.get("distilled", open_loop.get("vlm", {})).get("flags", {})
        lines += _flag_lines(source_flags)
        perception = open_loop.get("perception")
        if perception:
            lines += [
                "",
                "Perception heads (what the safety guard plans from; BEV cells at probability "
                f">= {perception['threshold']}, the corridor = the cell columns reaching within "
                "1.46 m of the ego's centre line, 0-28 m ahead):",
                "",
                "| class | grid P / R / IoU | corridor P / R / IoU | cells |",
                "|---|---|---|---|",
            ]

            def prf(m: dict[str, Any]) -> str:  # no prediction / no support: "-"
                return " / ".join(
                    "-" if m[k] is None else str(m[k]) for k in ("precision", "recall", "iou")
                )

            for name, v in perception["bev"].items():
                lines.append(
                    f"| {name} | {prf(v['grid'])} | {prf(v['corridor'])} | {v['grid']['support']} |"
                )
            lines += [
                "",
                f"Traffic-light head: accuracy {perception['light_accuracy']}, red recall "
                f"{perception['red_light_recall']}.",
            ]
            lines += _span_lines(perception.get("span"))
            lines += _object_lines(perception.get("objects"))
            lines += _lane_lines(perception.get("lanes"))
            lines += _guard_check_lines(perception.get("guard_checks"))
    else:
        lines.append("Not measured yet (`vlmdrive eval-open --out <checkpoint>/open_loop.json`).")
    lines += ["", "## Closed-loop evaluation (embedded simulator, eval suite, `vlmdrive eval`)", ""]
    if closed:
        lines.append(
            "| agent | DS | RC | IP | collisions | failed routes | guard interventions | routes |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for row in closed["rows"]:
            lines.append(
                f"| {row['agent']} | {row['ds']:.2f} | {row['rc']:.2f} | {row['ip']:.3f} | "
                f"{row.get('collisions', '?')} | {row.get('failed', '?')} | "
                f"{row.get('interventions', '-')} | {row['routes']} |"
            )
        if "ratio" in closed:
            lines += ["", f"Agent / expert Driving Score: {closed['ratio']:.1%} (target >= 80%)."]
        if closed.get("note"):
            lines += ["", closed["note"]]
    else:
        lines.append("Not measured yet.")
    lines += ["", "## Speed (`benchmarks/bench_agent.py`, one torch thread)", ""]
    if speed:
        for r in speed.get("runs", []):
            lines.append(
                f"- `{r['mode']}`: control step p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms"
            )
        if "vlm" in speed:
            lines.append(f"- VLM reasoning on one frame: {speed['vlm']['reason_ms_p50']} ms")
    else:
        lines.append("Not measured yet.")
    lines += [
        "",
        "## Limitations",
        "",
        "- Trained only on the embedded simulator's rendering; it has never seen a real CARLA "
        "frame and will not transfer to CARLA without fine-tuning on CARLA data.",
        "- The VLM is tiny and learned a small templated language from automatic labels; "
        "its text is a readable summary of flags, distances and intent, not open-ended reasoning.",
        "",
        "## Reproduce",
        "",
        "```\nmake train\n```",
        "",
    ]
    path = directory / "README.md"
    path.write_text("\n".join(lines))
    return path


def _span_lines(span: dict[str, Any] | None) -> list[str]:
    """The span head's error (`open_loop.span_metrics`), if the model has one."""
    if not span:
        return []
    parts = [
        f"{name} {v['edge_mae_m']} m ({v['cells']} cells)"
        for name, v in span.items()
        if v["edge_mae_m"] is not None
    ]
    return [
        "",
        "Span head (where across an occupied cell its objects lie), mean error of the two "
        "edges on cells both predicted and truly occupied: " + ", ".join(parts) + ".",
    ]


def _head_table(
    intro: str, columns: list[str], metrics: dict[str, Any], cells: Callable[[dict], list]
) -> list[str]:
    """A markdown table of one head's metrics: a row per entry of `metrics` (but its
    "threshold"), the entry's name then `cells(entry)`."""
    lines = ["", intro, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, v in metrics.items():
        if name != "threshold":
            lines.append("| " + " | ".join(str(c) for c in [name, *cells(v)]) + " |")
    return lines


def _object_lines(objects: dict[str, Any] | None) -> list[str]:
    """The detection head's table (`open_loop.object_metrics`), if the model has one."""
    if not objects:
        return []
    return _head_table(
        "Detection head (one box per cell and class with the object's centre, "
        f"`agent.model.objects`; centre probability >= {objects['threshold']}):",
        [
            "class",
            "centre precision",
            "centre recall",
            "within one cell: precision / recall",
            "true centres",
            "hull edge error [m]",
            "velocity error [m/s]",
        ],
        objects,
        lambda v: [
            v["precision"],
            v["recall"],
            f"{v.get('precision_1cell')} / {v.get('recall_1cell')}",
            v["support"],
            v["edge_mae_m"],
            v["velocity_mae_mps"],
        ],
    )


def _lane_lines(lanes: dict[str, Any] | None) -> list[str]:
    """The lane head's table (`open_loop.lane_metrics`), if the model has one."""
    if not lanes:
        return []
    return _head_table(
        "Lane head (the lanes beside the route at 0 / 20 / 40 m, all stations; "
        f"probability >= {lanes['threshold']}):",
        [
            "lane",
            "accuracy",
            "majority-class accuracy",
            "precision",
            "recall",
            "frames x stations",
        ],
        lanes,
        lambda v: [
            v["accuracy"],
            v["majority_accuracy"],
            v["precision"],
            v["recall"],
            v["support"],
        ],
    )


def _guard_check_lines(checks: dict[str, Any] | None) -> list[str]:
    """The guard's path checks replayed on eval frames (`open_loop.guard_checks`)."""
    if not checks:
        return []

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f} %"

    lines = [
        "",
        "The safety guard's path checks replayed on these frames (`agent/safety/offline.py`): "
        "how often they fail the expert's own plan, and how many of the straight-on plans "
        "that really reach an obstacle they fail too:",
        "",
        "| perception | frames | expert plan flagged | straight-on hazards caught |",
        "|---|---|---|---|",
    ]

    def row(label: str, m: dict[str, Any]) -> str:
        return (
            f"| {label} | {m['frames']} | {pct(m['expert_plan_flagged'])} | "
            f"{pct(m['hazards_caught'])} of {m['hazards']} |"
        )

    setting = checks.get("model_threshold")
    if "model" in checks:
        label = "the model's heads"
        if setting is not None:
            label += f", cells >= {setting:g} (the guard's setting)"
        lines.append(row(label, checks["model"]))
    if "ground_truth" in checks:
        lines.append(row("ground truth, same grid", checks["ground_truth"]))
    for threshold, m in checks.get("model_by_threshold", {}).items():
        if setting is None or threshold != f"{setting:g}":  # that row is the first one
            lines.append(row(f"the model's heads, cells >= {threshold}", m))
    return lines
