"""Load scenario and suite YAML files into typed models, with errors that point at lines.

Every problem in a file is reported at once, each as `file:line:column: field.path: message`
(lines from the YAML marks). `extends: other.yaml` inherits another file of the same
folder (deep merge, lists replaced); a path that leaves the folder is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from scenarios.schema import Scenario, Suite

Mark = tuple[str, int, int]  # file, line (1-based), column (1-based)
Path_ = tuple[Any, ...]
T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ScenarioError(ValueError):
    """One or more problems in scenario files; `problems` lists them all."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _marks(
    node: yaml.Node, file: str, path: Path_ = (), out: dict | None = None
) -> dict[Path_, Mark]:
    """Map every data path in a composed YAML document to where it is written."""
    out = {} if out is None else out
    out.setdefault(path, (file, node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, key.value)
            out[sub] = (file, key.start_mark.line + 1, key.start_mark.column + 1)
            _marks(value, file, sub, out)
            out[sub] = (file, key.start_mark.line + 1, key.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _marks(item, file, (*path, i), out)
    return out


def read_yaml(path: Path) -> tuple[Any, dict[Path_, Mark]]:
    """Parse one YAML file: (data, marks). YAML syntax errors become a ScenarioError."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(
            [Problem(file, 1, 1, "", f"cannot read file: {exc.strerror}")]
        ) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ScenarioError([Problem(file, line, 1, "", f"not UTF-8 text: {exc.reason}")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ScenarioError(
            [Problem(file, line, col, "", f"invalid YAML: {exc.problem}")]
        ) from None
    except yaml.YAMLError as exc:
        raise ScenarioError([Problem(file, 1, 1, "", f"invalid YAML: {exc}")]) from None
    if node is None:
        raise ScenarioError([Problem(file, 1, 1, "", "the file is empty")])
    duplicates = _duplicate_keys(node, file)
    if duplicates:
        raise ScenarioError(duplicates)
    return data, _marks(node, file)


def _duplicate_keys(node: yaml.Node, file: str, path: Path_ = ()) -> list[Problem]:
    """YAML lets a later key silently replace an earlier one; a scenario file must not."""
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key, value in node.value:
            name = key.value
            if name in seen:
                mark = key.start_mark
                problems.append(
                    Problem(
                        file,
                        mark.line + 1,
                        mark.column + 1,
                        _dotted((*path, name)),
                        "duplicate key",
                    )
                )
            seen.add(name)
            problems += _duplicate_keys(value, file, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _duplicate_keys(item, file, (*path, i))
    return problems


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return over


def _resolve(path: Path, seen: tuple[Path, ...] = ()) -> tuple[Any, dict[Path_, Mark]]:
    data, marks = read_yaml(path)
    file = str(path)
    if not isinstance(data, dict):
        raise ScenarioError(
            [Problem(file, 1, 1, "", "a scenario file must be a mapping of fields")]
        )
    parent = data.get("extends")
    if parent is None:
        return data, marks
    where = marks.get(("extends",), (file, 1, 1))
    if not isinstance(parent, str):
        raise ScenarioError([Problem(*where, "extends", "must be a file name")])
    folder = path.parent.resolve()
    base_path = (path.parent / parent).resolve()
    if not base_path.is_relative_to(folder):
        raise ScenarioError(
            [
                Problem(
                    *where,
                    "extends",
                    f"{parent!r} leaves the scenario's folder {folder}; only files beside it can be extended",
                )
            ]
        )
    if base_path in seen or base_path == path.resolve():
        raise ScenarioError([Problem(*where, "extends", f"circular extends through {parent!r}")])
    if not base_path.is_file():
        raise ScenarioError([Problem(*where, "extends", f"no such file {parent!r} in {folder}")])
    base, base_marks = _resolve(base_path, (*seen, path.resolve()))
    merged = _merge(base, {k: v for k, v in data.items() if k != "extends"})
    merged.pop("extends", None)
    return merged, {**base_marks, **marks}


def _reach(loc: tuple[Any, ...], marks: dict[Path_, Mark]) -> Path_:
    """The longest data path in `loc` (skipping union-member and discriminator tags)."""
    reached: Path_ = ()
    for part in loc:
        if (*reached, part) in marks:
            reached = (*reached, part)
    return reached


def _dotted(path: Path_) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _problems(
    exc: ValidationError, marks: dict[Path_, Mark], file: str, schema: str = "scenario"
) -> list[Problem]:
    """One problem per data path. Errors from the members of a union (a value that is
    neither a number nor any distribution) are folded into one message; a missing field
    is named after the mapping that lacks it."""
    grouped: dict[Path_, list[dict]] = {}
    for err in exc.errors():
        grouped.setdefault(_reach(tuple(err["loc"]), marks), []).append(dict(err))
    # A value that looks like a distribution but is wrong inside fails the plain-number
    # member at its own path too; the error deeper down is the one worth reading.
    deeper = {path[:k] for path in grouped for k in range(len(path))}
    problems = []
    for reached, errs in grouped.items():
        if reached in deeper and any(e["type"] != "missing" for e in errs):
            continue
        mark = marks.get(reached, (file, 1, 1))
        real = [e for e in errs if e["type"] != "missing"]
        if real:
            problems.append(
                Problem(mark[0], mark[1], mark[2], _dotted(reached), _message(real, schema))
            )
            continue
        for missing_err in errs:  # only missing fields: each one is its own problem
            missing = (*reached, missing_err["loc"][-1])
            problems.append(
                Problem(mark[0], mark[1], mark[2], _dotted(missing), "required field is missing")
            )
    return sorted(problems, key=lambda p: (p.file, p.line, p.column))


def _message(errs: list[dict], schema: str = "scenario") -> str:
    """One message per field; a value no union member accepts gets one combined line."""
    if len(errs) == 1:
        err = errs[0]
        if err["type"] == "extra_forbidden":
            return f"unknown field (not part of the {schema} schema)"
        if err["type"] == "missing":
            return "required field is missing"
        return str(err["msg"]).removeprefix("Value error, ")
    for err in errs:  # a specific message beats the union noise
        if err["type"] in ("value_error", "union_tag_invalid", "union_tag_not_found"):
            return str(err["msg"]).removeprefix("Value error, ")
    literals = [e for e in errs if e["type"] == "literal_error"]
    if literals:
        return str(literals[0]["msg"]) + f", got {literals[0]['input']!r}"
    value = errs[0].get("input")
    return (
        f"invalid value {value!r}: expected a value of the field's type or a distribution "
        "({uniform: [a, b]}, {normal: {mean, std, min, max}}, {choice: [...]})"
    )


def validate_data(data: Any, marks: dict[Path_, Mark], file: str) -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_problems(exc, marks, file)) from None


def load_scenario(path: str | Path) -> Scenario:
    """Parse, inherit (`extends`) and validate one scenario file."""
    path = Path(path)
    data, marks = _resolve(path)
    return validate_data(data, marks, str(path))


@dataclass(frozen=True)
class SuiteItem:
    path: Path
    scenario: Scenario
    repetitions: int = 1


def load_suite(path: str | Path) -> list[SuiteItem]:
    """A folder (every `*.yaml` in it except `_*.yaml` bases and suite files, sorted), a
    suite YAML (`suite:` with `scenarios: [{file, repetitions}]`), or one scenario file.
    Problems from every file are collected before raising."""
    path = Path(path)
    entries: list[tuple[Path, int, int | None]] = []
    problems: list[Problem] = []
    if path.is_dir():
        for f in sorted(path.glob("*.yaml")):
            if f.name.startswith(("_", "suite")):  # bases and suite files
                continue
            entries.append((f, 1, None))
    elif path.is_file():
        data, marks = read_yaml(path)
        if isinstance(data, dict) and "suite" in data:
            try:
                suite = Suite.model_validate(data)
            except ValidationError as exc:
                raise ScenarioError(_problems(exc, marks, str(path))) from None
            for i, entry in enumerate(suite.scenarios):
                f = (path.parent / entry.file).resolve()
                if not f.is_file():
                    mark = marks.get(("scenarios", i, "file"), (str(path), 1, 1))
                    problems.append(
                        Problem(*mark, f"scenarios[{i}].file", f"no such file {entry.file!r}")
                    )
                entries.append((f, entry.repetitions, entry.variations))
        else:
            entries.append((path, 1, None))
    else:
        raise ScenarioError([Problem(str(path), 1, 1, "", "no such file or folder")])
    items = []
    for f, reps, variations in entries:
        if not f.is_file():
            continue
        try:
            scenario = load_scenario(f)
            if variations is not None:
                scenario = scenario.model_copy(
                    update={"variations": min(variations, scenario.variations)}
                )
            items.append(SuiteItem(f, scenario, reps))
        except ScenarioError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ScenarioError(problems)
    return items


def load_typed_yaml(path: str | Path, model: type[T], schema: str) -> T:
    """Any YAML file validated by a pydantic model (configs: training, agent), with the
    same file:line:column problems as scenarios. Raises ScenarioError."""
    path = Path(path)
    data, marks = read_yaml(path)
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ScenarioError(_problems(exc, marks, str(path), schema)) from None
