"""`vlmdrive` command line. Subcommands import their packages lazily so `--help` is fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=2)


def _world(weather: str, seed: int, town: str, route_m: float, vehicles: int, pedestrians: int):
    from sim.lite.town import TownSpec, TownSpecError
    from sim.spec import RouteSpec, WorldSpec, WorldSpecError
    from sim.weather import Weather, WeatherError

    try:
        town_spec = TownSpec.for_highway() if town == "highway" else TownSpec()
        return WorldSpec(
            town=town_spec,
            route=RouteSpec(length_m=route_m),
            weather=Weather.preset(weather),
            num_vehicles=vehicles,
            num_pedestrians=pedestrians,
            name=f"{town}-{weather}-seed{seed}",
        )
    except (WeatherError, TownSpecError, WorldSpecError) as exc:
        _fail(str(exc))


@app.command()
def render(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/render"),
    weather: Annotated[str, typer.Option(help="CARLA weather preset name.")] = "ClearNoon",
    seed: Annotated[int, typer.Option(help="World seed.")] = 0,
    seconds: Annotated[
        float, typer.Option(help="Drive this long and write an mp4 (0: one frame).")
    ] = 0.0,
    town: Annotated[str, typer.Option(help="urban or highway.")] = "urban",
    width: Annotated[int, typer.Option(help="Camera width [px].")] = 512,
    height: Annotated[int, typer.Option(help="Camera height [px].")] = 256,
) -> None:
    """Write a camera frame and a BEV frame as PNGs (and an mp4 with --seconds N)."""
    import cv2

    from sim.lite.autopilot import RouteFollower
    from sim.lite.recording import ego_bev, record_drive
    from sim.lite.world import LiteSimulator
    from sim.sensors import SensorSpecError, default_front_camera

    if town not in ("urban", "highway"):
        _fail(f"--town must be 'urban' or 'highway', got {town!r}")
    spec = _world(weather, seed, town, 400.0, 20, 10)
    sim = LiteSimulator()
    sim.reset(spec, seed)
    try:
        sim.setup_sensors([default_front_camera(width, height)])
    except SensorSpecError as exc:
        _fail(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    driver = RouteFollower(sim)
    if seconds > 0:
        rec = record_drive(sim, driver, seconds, out, f"{weather}_seed{seed}", "rgb_front")
        console.print(f"video: {rec.video}")
    data = sim.tick(driver())
    camera_path, bev_path = (
        out / f"camera_{weather}_seed{seed}.png",
        out / f"bev_{weather}_seed{seed}.png",
    )
    cv2.imwrite(str(camera_path), data["rgb_front"][1][..., :3])
    cv2.imwrite(str(bev_path), ego_bev(sim, size_px=512))
    console.print(f"camera: {camera_path}\nbev:    {bev_path}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/demo"),
    agent: Annotated[
        str,
        typer.Option(
            help="'model' (the shipped checkpoint), 'expert' or a Leaderboard agent file."
        ),
    ] = "model",
    agent_config: Annotated[str, typer.Option(help="The agent's config file.")] = "",
    workers: Annotated[int, typer.Option(help="Ray workers (routes in parallel).")] = 2,
    record: Annotated[bool, typer.Option(help="Write one video per route.")] = True,
) -> None:
    """Headless Leaderboard-style evaluation on the demo suite, then the HTML report.

    Default agent: the Leaderboard agent (agent/leaderboard_agent.py: the shipped
    checkpoint, VLM reasoning in a background process with 0.1 s of game-time latency, the
    safety guard on) — camera, GNSS, IMU and speedometer only.
    """
    from scenarios.loader import ScenarioError
    from sim.evaluate import EvaluationError, details_path, evaluate
    from sim.report import write_report
    from vlmdrive.cli_eval import summary_table

    root = Path(__file__).resolve().parent.parent
    suite = root / "scenarios" / "library" / "demo" / "suite.yaml"
    if agent == "model":
        agent = str(root / "agent" / "leaderboard_agent.py")
        if not agent_config:
            out.mkdir(parents=True, exist_ok=True)
            config = out / "agent.yaml"
            # The VLM's latency is modelled in game time, so the scores do not depend on how
            # busy the CPU is (docs/leaderboard_agent.md, "Reproducible async scores").
            config.write_text(
                "vlm_mode: async\nvlm_rate_hz: 2.0\nvlm_latency_s: 0.1\nsafety: {enabled: true}\n"
            )
            agent_config = str(config)
    results_path = out / "results.json"
    try:
        results = evaluate(
            agent,
            agent_config,
            suite,
            out=results_path,
            workers=workers,
            record=out / "videos" if record else None,
        )
    except (ScenarioError, EvaluationError) as exc:
        _fail(str(exc))
        raise typer.Exit(code=2) from None
    import json

    summary = json.loads(details_path(results_path).read_text())["summary"]
    console.print(summary_table(results, summary))
    report = write_report(results_path, out / "report")
    console.print(f"results: {results_path.resolve()}")
    console.print(f"report:  {report.resolve()}")


scenario_app = typer.Typer(no_args_is_help=True, help="Edge-case scenarios in YAML.")
app.add_typer(scenario_app, name="scenario")


def _load_or_exit(path: Path):
    """Load a scenario file; bad input prints `file:line:col: field: message` lines, exit 1."""
    from scenarios.loader import ScenarioError, load_scenario

    try:
        return load_scenario(path)
    except ScenarioError as exc:
        for problem in exc.problems:
            console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None


@scenario_app.command("validate")
def scenario_validate(
    paths: Annotated[list[Path], typer.Argument(help="Scenario files, suite files or folders.")],
) -> None:
    """Check scenario files; every problem printed as file:line:col: field: message. Exit 1 on any."""
    from scenarios.compile import compile_scenario
    from scenarios.loader import ScenarioError, load_suite
    from scenarios.sampler import sample

    problems = []
    count = 0
    for path in paths:
        try:
            items = load_suite(path)
        except ScenarioError as exc:
            problems += exc.problems
            continue
        for item in items:
            try:
                for concrete in sample(item.scenario, file=item.path):
                    compile_scenario(concrete, str(item.path))
                count += 1
            except ScenarioError as exc:
                problems += exc.problems
    for problem in problems:
        console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    if problems:
        console.print(f"{len(problems)} problem(s)", style="red")
        raise typer.Exit(code=1)
    console.print(f"{count} scenario(s) valid")


@scenario_app.command("schema")
def scenario_schema() -> None:
    """Print the JSON Schema of scenario files (for editors: yaml-language-server)."""
    import json

    from scenarios.schema import Scenario

    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vlmdrive scenario"
    print(json.dumps(schema, indent=2))


@scenario_app.command("sample")
def scenario_sample(
    path: Annotated[Path, typer.Argument(help="Scenario file.")],
    n: Annotated[int, typer.Option("-n", help="Number of concrete instances.")] = 5,
) -> None:
    """Print concrete instances of a scenario (its distributions drawn, deterministic by seed)."""
    import yaml

    from scenarios.loader import ScenarioError
    from scenarios.sampler import sample

    scenario = _load_or_exit(path)
    try:
        instances = sample(scenario, n=n, file=path)
    except ScenarioError as exc:
        for problem in exc.problems:
            console.print(str(problem), markup=False, highlight=False)
        raise typer.Exit(code=1) from None
    for instance in instances:
        data = instance.model_dump(mode="json", exclude_defaults=True)
        print("---")
        print(yaml.safe_dump(data, sort_keys=False).rstrip())


@scenario_app.command("preview")
def scenario_preview(
    path: Annotated[Path, typer.Argument(help="Scenario file.")],
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("preview.png"),
    variation: Annotated[int, typer.Option(help="Which sampled variation.")] = 0,
    seed: Annotated[int, typer.Option(help="World seed.")] = 0,
) -> None:
    """Top-down map of route, events, props and triggers beside the ego camera at the first event."""
    from scenarios.loader import ScenarioError
    from scenarios.preview import write_preview
    from scenarios.sampler import sample

    scenario = _load_or_exit(path)
    try:
        concrete = sample(scenario, n=variation + 1, file=path)[variation]
        write_preview(concrete, out, seed, str(path))
    except ScenarioError as exc:
        for problem in exc.problems:
            console.print(str(problem), markup=False, highlight=False)
        raise typer.Exit(code=1) from None
    console.print(f"preview: {out}")


@scenario_app.command("export")
def scenario_export(
    path: Annotated[Path, typer.Argument(help="Scenario file.")],
    format: Annotated[
        str, typer.Option("--format", help="Only 'leaderboard-xml'.")
    ] = "leaderboard-xml",
    town: Annotated[
        str | None, typer.Option(help="CARLA town (default: the file's map.carla.town).")
    ] = None,
    waypoints: Annotated[
        str | None,
        typer.Option(
            help="Route in CARLA world coordinates: 'x,y,z;x,y,z;...' (default: map.carla.waypoints)."
        ),
    ] = None,
    n: Annotated[
        int | None, typer.Option("-n", help="Variations to export (default: the file's).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the XML here instead of stdout.")] = None,
) -> None:
    """Export to Leaderboard 2.0 route XML for leaderboard_evaluator.py --routes."""
    from scenarios.export import export_file
    from scenarios.loader import ScenarioError

    if format != "leaderboard-xml":
        _fail(f"--format must be 'leaderboard-xml', got {format!r}")
    points = None
    if waypoints:
        try:
            points = [
                tuple(float(v) for v in p.split(",")) for p in waypoints.split(";") if p.strip()
            ]
        except ValueError:
            _fail(f"--waypoints must look like 'x,y,z;x,y,z', got {waypoints!r}")
        if any(len(p) != 3 for p in points or []):
            _fail("--waypoints: every point needs x,y,z")
    try:
        xml = export_file(path, n, town, points)
    except ScenarioError as exc:
        for problem in exc.problems:
            console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    if out is None:
        print(xml)
    else:
        out.write_text(xml, encoding="utf-8")
        console.print(f"routes: {out}")


def _register_subcommands() -> None:
    from vlmdrive import cli_collect, cli_compare, cli_eval, cli_finetune, cli_report, cli_train

    cli_eval.register(app)
    cli_report.register(app)
    cli_compare.register(app)
    cli_collect.register(app)
    cli_train.register(app)
    cli_finetune.register(app)


_register_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
