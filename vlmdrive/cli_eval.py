"""`vlmdrive eval`: a Leaderboard-style evaluation of an agent on a scenario suite.

Wire it into the main app with `register(app)`. Heavy imports happen inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=code)


def _fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def summary_table(results: dict[str, Any], summary: dict[str, Any]) -> Table:
    """DS / RC / IP / Bench2Drive numbers over all routes, then one row per scenario tag."""
    table = Table(title=f"Leaderboard evaluation ({results['entry_status']})")
    table.add_column("routes", no_wrap=True)
    for column in ("DS", "RC", "IP", "success %", "efficiency %", "comfort %"):
        table.add_column(column, justify="right")
    table.add_row(
        f"all ({summary['routes']})",
        _fmt(summary["driving_score"]),
        _fmt(summary["route_completion"]),
        _fmt(summary["infraction_penalty"], 3),
        _fmt(summary["success_rate"], 1),
        _fmt(summary["efficiency"], 1),
        _fmt(summary["comfortness"], 1),
    )
    for tag, row in summary["by_tag"].items():
        table.add_row(
            f"{tag} ({row['routes']})",
            _fmt(row["driving_score"]),
            _fmt(row["route_completion"]),
            "",
            _fmt(row["success_rate"], 1),
            "",
            "",
        )
    return table


def register(app: typer.Typer) -> None:
    """Add the `eval` command to `app`."""

    @app.command("eval")
    def eval_command(
        agent: Annotated[
            str,
            typer.Option(help="Agent file defining get_entry_point(), or 'expert'."),
        ],
        suite: Annotated[Path, typer.Option(help="Suite YAML, scenario folder or scenario file.")],
        agent_config: Annotated[
            str, typer.Option("--agent-config", help="Passed to the agent's setup().")
        ] = "",
        backend: Annotated[
            str, typer.Option(help="Simulator backend: lite, or carla (a CARLA server).")
        ] = "lite",
        out: Annotated[Path, typer.Option(help="Leaderboard results JSON to write.")] = Path(
            "results.json"
        ),
        repetitions: Annotated[int, typer.Option(help="Repetitions of every route.")] = 1,
        resume: Annotated[
            bool, typer.Option("--resume", help="Keep the finished routes of --out, run the rest.")
        ] = False,
        workers: Annotated[int, typer.Option(help="Parallel Ray workers (1: in-process).")] = 1,
        ray_address: Annotated[
            str | None, typer.Option("--ray-address", help="Ray cluster to run on.")
        ] = None,
        record: Annotated[
            Path | None, typer.Option(help="Write one video per route into this folder.")
        ] = None,
        seed: Annotated[
            int, typer.Option(help="Evaluation seed (world seeds derive from it).")
        ] = 0,
        host: Annotated[str, typer.Option(help="Simulator host (carla backend).")] = "localhost",
        port: Annotated[int, typer.Option(help="Simulator port (carla backend).")] = 2000,
        timeout: Annotated[
            float,
            typer.Option(help="CARLA client timeout [s] per connection attempt and tick."),
        ] = 10.0,
        min_speed_policy: Annotated[
            str,
            typer.Option(
                "--min-speed-policy",
                help="'decreases' (Leaderboard 2.0 table) or 'unused' (newer master).",
            ),
        ] = "decreases",
        quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    ) -> None:
        """Run AGENT on every route of SUITE; write the Leaderboard results JSON and a details sidecar."""
        from scenarios.loader import ScenarioError
        from sim.agent_loading import AgentLoadError
        from sim.evaluate import EvaluationError, details_path, evaluate

        try:
            results = evaluate(
                agent,
                agent_config,
                suite,
                backend=backend,
                out=out,
                repetitions=repetitions,
                resume=resume,
                workers=workers,
                ray_address=ray_address,
                record=record,
                seed=seed,
                progress=not quiet,
                host=host,
                port=port,
                timeout_s=timeout,
                min_speed_policy=min_speed_policy,
            )
        except ScenarioError as exc:
            for problem in exc.problems:
                console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
            console.print(f"{len(exc.problems)} problem(s) in the suite", style="red")
            raise typer.Exit(code=2) from None
        except (AgentLoadError, EvaluationError) as exc:
            _fail(str(exc))
            return
        except KeyboardInterrupt:
            console.print(
                f"[yellow]interrupted[/yellow]: finished routes are in {out}; "
                "continue with --resume",
                highlight=False,
            )
            raise typer.Exit(code=130) from None
        import json

        details = json.loads(details_path(out).read_text(encoding="utf-8"))
        console.print(summary_table(results, details["summary"]))
        for route in details["routes"]:
            if route.get("error"):
                console.print(
                    f"{route['route_id']} ({route['scenario']}): {route['status']}: {route['error']}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
        console.print(f"results: {out}\ndetails: {details_path(out)}", highlight=False)
        if results["entry_status"] != "Finished":
            raise typer.Exit(code=1)
