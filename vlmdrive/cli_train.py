"""`vlmdrive train --config configs/tiny.yaml` and `vlmdrive eval-open`.

`register(app)` adds both commands to the main typer app (vlmdrive/cli.py wires it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

_out = Console()
_err = Console(stderr=True)


def _fail(message: str) -> NoReturn:
    _err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def train(
    config: Annotated[Path, typer.Option("--config", help="Training config YAML.")] = Path(
        "configs/tiny.yaml"
    ),
    resume: Annotated[bool, typer.Option(help="Continue from the run's saved state.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train the driving model (VLM, encoder, planner) in the config's stages."""
    from agent.training.config import load_train_config
    from agent.training.trainer import Trainer
    from scenarios.loader import ScenarioError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not config.is_file():
        _fail(f"--config {config} does not exist")
    try:
        cfg = load_train_config(config)
    except ScenarioError as exc:
        _fail(str(exc))
    if not cfg.data.train.is_dir():
        _fail(
            f"{config}: data.train: {cfg.data.train} does not exist; collect it first "
            f"(vlmdrive collect --suite scenarios/library/train --episodes N --out {cfg.data.train})"
        )
    for i, extra in enumerate(cfg.data.extra):
        if not extra.is_dir():
            _fail(
                f"{config}: data.extra[{i}]: {extra} does not exist; collect it first "
                f"(vlmdrive collect ... --dagger AGENT_CONFIG --out {extra})"
            )
    if cfg.init is not None and not cfg.init.is_dir():
        _fail(f"{config}: init: {cfg.init} is not a checkpoint directory")
    try:
        summary = Trainer(cfg, progress=progress).run(resume=resume)
    except ValueError as exc:
        _fail(f"{config}: {exc}")
    _out.print(f"model written to {cfg.out} in {summary['train_wall_s']:.0f} s")
    if cfg.data.val is not None and cfg.data.val.is_dir():
        from agent.training.open_loop import evaluate_open_loop

        metrics = evaluate_open_loop(cfg.out, cfg.data.val)
        (cfg.out / "open_loop.json").write_text(json.dumps(metrics, indent=1))
        _out.print(_summary_line(metrics))
    from agent.training.card import write_model_card

    write_model_card(cfg.out)


def _summary_line(metrics: dict) -> str:
    from agent.training.open_loop import DISTANCE_BANDS_M

    parts = []
    for source in ("vlm", "distilled"):
        if source in metrics:
            m = metrics[source]
            parts.append(
                f"{source}: L2@1/2/3s {m['L2@1s']:.2f}/{m['L2@2s']:.2f}/{m['L2@3s']:.2f} m, "
                f"collisions {m['collision_rate']:.1%}, flag recall {m['flags']['macro_recall']} "
                f"(events {m['flags'].get('macro_event_recall')}, "
                f"within {DISTANCE_BANDS_M[1]:g} m {m['flags'].get('macro_recall_near')}), "
                f"intent acc {m['intent_accuracy']:.2f}"
            )
    if "vlm" in metrics and "text" in metrics["vlm"]:
        parts.append(f"text ROUGE-L {metrics['vlm']['text']['rouge_l_f1']:.3f}")
    return "\n".join(parts)


def eval_open(
    checkpoint: Annotated[Path, typer.Option(help="Model checkpoint directory.")] = Path(
        "checkpoints/vlmdrive-tiny"
    ),
    data: Annotated[Path, typer.Option(help="Held-out shards (eval suite).")] = Path("data/eval"),
    out: Annotated[Path | None, typer.Option(help="Write the metrics JSON here.")] = None,
    text_frames: Annotated[int, typer.Option(help="Frames to generate reasoning text for.")] = 200,
) -> None:
    """Open-loop metrics: L2 at 1/2/3 s, collision rate, flag precision/recall, intent
    accuracy, reasoning text similarity."""
    from agent.model.checkpoint import CheckpointError
    from agent.training.open_loop import evaluate_open_loop

    if not data.is_dir():
        _fail(f"--data {data} does not exist (vlmdrive collect --suite scenarios/library/eval ...)")
    try:
        metrics = evaluate_open_loop(checkpoint, data, text_frames=text_frames)
    except (CheckpointError, ValueError) as exc:
        _fail(str(exc))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(metrics, indent=1))
    _out.print(_summary_line(metrics))


def draw_perception(
    checkpoint: Annotated[Path, typer.Option(help="Model checkpoint directory.")] = Path(
        "checkpoints/vlmdrive-tiny"
    ),
    data: Annotated[Path, typer.Option(help="Held-out shards (eval suite).")] = Path("data/eval"),
    out: Annotated[Path, typer.Option(help="The PNG to write.")] = Path("outputs/perception.png"),
    frames: Annotated[int, typer.Option(min=1, max=24, help="Frames to draw.")] = 6,
    seed: Annotated[int, typer.Option(help="Which frames (random, one per episode).")] = 0,
) -> None:
    """Draw what the perception heads see against the labels: camera image over a
    bird's-eye view of the grid, the occupancy, detection and lane heads
    (agent/training/perception_pictures.py)."""
    from agent.model.checkpoint import CheckpointError
    from agent.training.perception_pictures import draw_perception as draw

    if not data.is_dir():
        _fail(f"--data {data} does not exist (vlmdrive collect --suite scenarios/library/eval ...)")
    if out.suffix.lower() != ".png":
        _fail(f"--out {out}: the picture is a PNG; give a path ending in .png")
    try:
        path = draw(checkpoint, data, out, frames=frames, seed=seed)
    except (CheckpointError, ValueError) as exc:
        _fail(str(exc))
    _out.print(f"perception picture: {path}")


COLLISIONS = ("collisions_layout", "collisions_pedestrian", "collisions_vehicle")


def _global(results_path: Path) -> dict:
    """Driving Score, RC, IP, collisions and safety-guard interventions of one evaluation."""
    from sim.evaluate import details_path

    data = json.loads(results_path.read_text())
    values = data["values"]
    records = data["_checkpoint"]["records"]
    row = {
        "ds": float(values[0]),
        "rc": float(values[1]),
        "ip": float(values[2]),
        "routes": len(records),
        "collisions": sum(len(r["infractions"].get(k, [])) for r in records for k in COLLISIONS),
        "failed": sum(1 for r in records if str(r["status"]).startswith("Failed")),
    }
    details = details_path(results_path)
    if details.is_file():
        routes = json.loads(details.read_text()).get("routes", [])
        row["interventions"] = sum(
            int((r.get("interventions") or {}).get("interventions", 0)) for r in routes
        )
    return row


def model_card(
    checkpoint: Annotated[Path, typer.Argument(help="Model checkpoint directory.")] = Path(
        "checkpoints/vlmdrive-tiny"
    ),
    agent_results: Annotated[
        Path | None, typer.Option(help="results.json of `vlmdrive eval` with this model.")
    ] = None,
    unguarded_results: Annotated[
        Path | None,
        typer.Option(help="results.json of the same agent with the safety guard off."),
    ] = None,
    expert_results: Annotated[
        Path | None, typer.Option(help="results.json of the expert on the same suite.")
    ] = None,
    vlm_results: Annotated[
        Path | None,
        typer.Option(help="results.json of the agent with the full VLM (configs/agent_vlm.yaml)."),
    ] = None,
    speed: Annotated[Path | None, typer.Option(help="bench_agent.py --json output.")] = None,
) -> None:
    """(Re)write the checkpoint's model card from its metrics files; with results files,
    record the closed-loop numbers first."""
    from agent.training.card import write_model_card

    if agent_results is not None:
        rows = [{"agent": "vlmdrive-tiny + guard", **_global(agent_results)}]
        closed: dict = {"rows": rows}
        if vlm_results is not None:
            rows.append({"agent": "vlmdrive-tiny + guard, VLM async", **_global(vlm_results)})
        if unguarded_results is not None:
            rows.append({"agent": "vlmdrive-tiny, guard off", **_global(unguarded_results)})
        if expert_results is not None:
            rows.append({"agent": "expert", **_global(expert_results)})
            if rows[-1]["ds"] > 0:
                closed["ratio"] = rows[0]["ds"] / rows[-1]["ds"]
        (checkpoint / "closed_loop.json").write_text(json.dumps(closed, indent=1))
    if speed is not None:
        (checkpoint / "speed.json").write_text(speed.read_text())
    _out.print(f"model card: {write_model_card(checkpoint)}")


def register(app: typer.Typer) -> None:
    app.command("model-card")(model_card)
    app.command()(train)
    app.command("eval-open")(eval_open)
    app.command("draw-perception")(draw_perception)
