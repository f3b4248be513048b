"""`vlmdrive collect`: expert driving data (camera, route inputs, trajectory and labels).

Wire it into the main app with `register(app)`. Heavy imports happen inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def register(app: typer.Typer) -> None:
    """Add the `collect` command to `app`."""

    @app.command("collect")
    def collect_command(
        suite: Annotated[Path, typer.Option(help="Suite YAML, scenario folder or scenario file.")],
        episodes: Annotated[int, typer.Option(help="Episodes to drive (cycling the suite).")],
        out: Annotated[Path, typer.Option(help="Dataset folder to create (must be empty).")],
        seed: Annotated[
            int, typer.Option(help="Collection seed (world seeds derive from it).")
        ] = 0,
        workers: Annotated[int, typer.Option(help="Parallel worker processes.")] = 1,
        perturb: Annotated[
            float,
            typer.Option(help="Steering perturbations started per second (0: off)."),
        ] = 0.0,
        dagger: Annotated[
            Path | None,
            typer.Option(
                help="Agent config (e.g. configs/agent_no_guard.yaml): the model agent drives "
                "some segments and the expert labels them (DAgger)."
            ),
        ] = None,
        dagger_beta: Annotated[
            float, typer.Option(help="Probability the model drives a 4 s segment (--dagger).")
        ] = 0.5,
        quiet: Annotated[bool, typer.Option("--quiet", help="No per-episode lines.")] = False,
    ) -> None:
        """Drive the expert over SUITE and write shards, index.json and the dataset card."""
        from agent.data.collect import CollectError, collect
        from scenarios.loader import ScenarioError

        try:
            summary = collect(
                suite,
                episodes,
                out,
                seed=seed,
                workers=workers,
                perturb=perturb,
                progress=not quiet,
                dagger=dagger,
                dagger_beta=dagger_beta,
            )
        except ScenarioError as exc:
            for problem in exc.problems:
                console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
            console.print(f"{len(exc.problems)} problem(s) in the suite", style="red")
            raise typer.Exit(code=2) from None
        except CollectError as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        console.print(
            f"{summary.episodes} episodes, {summary.frames} frames in {len(summary.shards)} "
            f"shard(s), {summary.size_bytes / 1e6:.1f} MB, {summary.wall_s:.0f} s -> "
            f"{summary.out} (card: {summary.out / 'README.md'})",
            highlight=False,
        )
