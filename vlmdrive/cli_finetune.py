"""`vlmdrive finetune`: closed-loop PPO fine-tuning of the planner (rl_finetune/trainer.py).

`register(app)` adds the command to the main typer app (vlmdrive/cli.py wires it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

_out = Console()
_err = Console(stderr=True)

# Command-line flags that override a config field (flag -> field).
FLAG_FIELDS = {
    "--init": "init",
    "--suite": "suite",
    "--total-steps": "total_steps",
    "--envs": "envs",
    "--workers": "workers",
    "--ray-address": "ray_address",
    "--out": "out",
    "--seed": "seed",
}


def _fail(message: str) -> NoReturn:
    _err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(code=2)


def finetune(
    init: Annotated[
        Path | None, typer.Option(help="Imitation checkpoint to start from (the KL reference).")
    ] = None,
    suite: Annotated[
        Path | None, typer.Option(help="Training suite: folder, suite YAML or scenario file.")
    ] = None,
    total_steps: Annotated[
        int | None, typer.Option(help="Policy steps (10 Hz) over all envs.")
    ] = None,
    envs: Annotated[int | None, typer.Option(help="Environments per worker.")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Rollout workers; more than 1 runs them on Ray.")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (e.g. ray://head:10001).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory: state, TensorBoard, checkpoint.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of envs, actions, minibatches.")] = None,
    config: Annotated[
        Path, typer.Option("--config", help="Fine-tuning config YAML; flags override it.")
    ] = Path("configs/finetune.yaml"),
    resume: Annotated[bool, typer.Option(help="Continue from <out>/state.")] = False,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """PPO on the planner in closed loop, the safety shield on; writes <out>/checkpoint,
    which the Leaderboard agent loads (`checkpoint: <out>/checkpoint`)."""
    from pydantic import ValidationError

    from rl_finetune.config import FinetuneConfig, load_finetune_config
    from rl_finetune.trainer import FinetuneError, FinetuneTrainer
    from scenarios.loader import ScenarioError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not config.is_file():
        _fail(f"--config {config} does not exist")
    try:
        cfg = load_finetune_config(config)
    except ScenarioError as exc:
        _fail(str(exc))
    given = {
        "--init": init,
        "--suite": suite,
        "--total-steps": total_steps,
        "--envs": envs,
        "--workers": workers,
        "--ray-address": ray_address,
        "--out": out,
        "--seed": seed,
    }
    overrides: dict[str, Any] = {FLAG_FIELDS[f]: v for f, v in given.items() if v is not None}
    if overrides:
        try:
            cfg = FinetuneConfig.model_validate({**cfg.model_dump(), **overrides})
        except ValidationError as exc:
            flags = {field: flag for flag, field in FLAG_FIELDS.items()}
            lines = []
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else ""
                where = flags.get(field, f"{config}: {field}" if field else str(config))
                lines.append(f"{where}: {error['msg']}")
            _fail("\n".join(lines))
    trainer = FinetuneTrainer(cfg, progress=progress)
    try:
        trainer.check()
    except FinetuneError as exc:
        _fail(str(exc))
    try:
        summary = trainer.run(resume=resume)
    except KeyboardInterrupt:
        # The environments and Ray workers are closed by then (the trainer's `finally`).
        _err.print(
            f"interrupted; the resumable state of the last checkpoint (every "
            f"{cfg.checkpoint_every} iterations) is in {cfg.out / 'state'}: rerun with --resume",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=130) from None
    rate = summary["shield_intervention_rate"]
    recent = summary[next(k for k in summary if k.startswith("last_"))]
    _out.print(
        f"{summary['steps']} steps in {summary['iterations']} iterations, "
        f"{summary['wall_s']:.0f} s ({summary['sps']} steps/s); {summary['episodes']} episodes, "
        f"driving score {recent['driving_score']}, shield interventions per step "
        f"{'n/a' if rate is None else f'{rate:.3f}'}"
    )
    _out.print(
        f"checkpoint: {cfg.out / 'checkpoint'} (Leaderboard agent config: "
        f"`checkpoint: {cfg.out / 'checkpoint'}`)",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command()(finetune)
