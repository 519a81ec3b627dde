"""Reading a rule set from YAML or JSON, with every problem located by line and column.

The YAML is parsed twice from the same text: once into plain data, once into
PyYAML's node graph, whose ``start_mark`` of every key and value gives the
position a problem's path (``rules[3].condition.all[0].value``) points at.

>>> text = '''
... name: demo
... rules:
...   - id: deep_arrears
...     description: Deep arrears
...     why: ninety days is default
...     applies_to: [tick]
...     condition: {feature: max_dpdd, op: ge, value: 90}
...     severity: critical
...     dedup_key: "{customer_id}:dpd90"
...     route: both
... '''
>>> try:
...     load_text(text, "demo.yaml")
... except RuleSetError as err:
...     print(err)
demo.yaml:8:26: rule deep_arrears: unknown feature 'max_dpdd'; did you mean max_dpd? \
(rules[0].condition.feature)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rules.conditions import Problem
from rules.engine import CompiledRuleSet, compile_rule_set
from rules.features import FEATURES, FeatureSpec
from rules.model import RuleSet

Path_ = tuple[str | int, ...]


class RuleSetError(ValueError):
    """A rule set that cannot be used; ``problems`` says everything that is wrong."""

    def __init__(self, problems: list[Problem], source: str = "") -> None:
        self.problems = problems
        self.source = source
        super().__init__("\n".join(p.format(source) for p in problems))


def _marks(node: yaml.Node, path: Path_, out: dict[Path_, tuple[int, int]], dup: list[Problem]):
    out.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            k = str(key.value)
            if k in seen:
                dup.append(
                    Problem(
                        f"duplicate key {k!r}",
                        None,
                        (*path, k),
                        key.start_mark.line + 1,
                        key.start_mark.column + 1,
                    )
                )
            seen.add(k)
            _marks(value, (*path, k), out, dup)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _marks(item, (*path, i), out, dup)


def parse_yaml(text: str) -> tuple[Any, dict[Path_, tuple[int, int]], list[Problem]]:
    """Data, positions by path, and syntax problems (duplicate keys included)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        return None, {}, [Problem(f"YAML syntax error: {problem}", None, (), line, col)]
    marks: dict[Path_, tuple[int, int]] = {}
    dup: list[Problem] = []
    if node is not None:
        _marks(node, (), marks, dup)
    return data, marks, dup


def _data_path(data: Any, loc: tuple[Any, ...]) -> Path_:
    """A pydantic error location mapped onto the document (union tags dropped)."""
    out: list[str | int] = []
    cur = data
    for part in loc:
        if isinstance(part, int) and isinstance(cur, list) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
        elif isinstance(part, str) and isinstance(cur, dict):
            key = "not" if part == "not_" else part
            if key in cur:
                out.append(key)
                cur = cur[key]
            elif part in ("all", "any", "not", "leaf"):
                continue  # discriminator tag
            else:
                out.append(key)  # a missing or extra key: point at its parent
                cur = None
        else:
            continue
    return tuple(out)


def _locate(problem: Problem, marks: Mapping[Path_, tuple[int, int]]) -> Problem:
    if problem.line is not None:
        return problem
    path = problem.path
    while path and path not in marks:
        path = path[:-1]
    pos = marks.get(path)
    if pos is None:
        return problem
    return Problem(problem.message, problem.rule_id, problem.path, pos[0], pos[1])


def _rule_id(data: Any, path: Path_) -> str | None:
    if (
        len(path) >= 2
        and path[0] == "rules"
        and isinstance(path[1], int)
        and isinstance(data, dict)
    ):
        rules = data.get("rules")
        if isinstance(rules, list) and path[1] < len(rules) and isinstance(rules[path[1]], dict):
            rid = rules[path[1]].get("id")
            return str(rid) if rid is not None else f"#{path[1] + 1}"
    return None


def check_data(
    data: Any,
    marks: Mapping[Path_, tuple[int, int]] | None = None,
    *,
    registry: Mapping[str, FeatureSpec] = FEATURES,
    known_scores: frozenset[str] | None = None,
) -> tuple[CompiledRuleSet | None, list[Problem]]:
    """Validate and compile plain data; the rule set, or None and located problems."""
    marks = marks or {}
    if not isinstance(data, dict):
        return None, [Problem("a rule set is a mapping with name and rules", None, (), 1, 1)]
    try:
        model = RuleSet.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = _data_path(data, err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown key {path[-1]!r}" if path else msg
            elif err["type"] == "missing":
                msg = f"missing key {path[-1]!r}" if path else msg
            problems.append(_locate(Problem(msg, _rule_id(data, path), path), marks))
        return None, _unique(problems)
    compiled, problems = compile_rule_set(model, registry=registry, known_scores=known_scores)
    return compiled, [_locate(p, marks) for p in problems]


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def check_text(
    text: str,
    *,
    registry: Mapping[str, FeatureSpec] = FEATURES,
    known_scores: frozenset[str] | None = None,
) -> tuple[CompiledRuleSet | None, list[Problem]]:
    """Parse YAML (or JSON, a subset of it) and compile; the rule set or the problems."""
    data, marks, problems = parse_yaml(text)
    if problems:
        return None, problems
    return check_data(data, marks, registry=registry, known_scores=known_scores)


def load_text(
    text: str,
    source: str = "",
    *,
    registry: Mapping[str, FeatureSpec] = FEATURES,
    known_scores: frozenset[str] | None = None,
) -> CompiledRuleSet:
    """A compiled rule set from YAML text; :class:`RuleSetError` lists every problem."""
    compiled, problems = check_text(text, registry=registry, known_scores=known_scores)
    if compiled is None:
        raise RuleSetError(problems, source)
    return compiled


def load_file(path: str | Path, **kw: Any) -> CompiledRuleSet:
    """A compiled rule set from a YAML or JSON file."""
    p = Path(path)
    return load_text(p.read_text(encoding="utf-8"), str(p), **kw)


def load_data(data: Any, source: str = "", **kw: Any) -> CompiledRuleSet:
    """A compiled rule set from plain data (e.g. a published JSON record)."""
    compiled, problems = check_data(data, **kw)
    if compiled is None:
        raise RuleSetError(problems, source)
    return compiled


DEFAULT_PACK = Path(__file__).parent / "packs" / "default.yaml"


def load_default() -> CompiledRuleSet:
    """The default rule pack shipped with creditwatch."""
    return load_file(DEFAULT_PACK)
