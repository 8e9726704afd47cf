"""The dispatch table: op name -> compiled rule, built from rule files.

`load_rules` reads the builtin library and any user files (user files layer over
the library: redefining an op needs `override`), resolves includes and families,
compiles every body, and raises one RuleFileError listing every problem found.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import Diagnostic, RuleFileError
from ..resources import builtin_rule_files
from ..util import paused_gc
from . import ast
from .compile import CompiledEquation, CompileError, compile_equations
from .parse import parse_file


@dataclass(frozen=True)
class Rule:
    """The compiled rule of one op (or one call_dps_packed plugin)."""

    op: str
    roles: tuple[str, ...]
    equations: tuple[CompiledEquation, ...]
    pos: ast.Pos
    family: str | None

    @property
    def forward(self) -> tuple[CompiledEquation, ...]:
        """Equations that define `out` (or a field of it)."""
        return tuple(e for e in self.equations if e.target[0] == "out")

    @property
    def backward(self) -> tuple[CompiledEquation, ...]:
        """Equations that define an argument."""
        return tuple(e for e in self.equations if e.target[0] != "out")


@dataclass(frozen=True)
class IgnoreEntry:
    """A pattern of ops deliberately left without layouts, and why."""

    pattern: str
    reason: str
    pos: ast.Pos


@dataclass
class RuleSet:
    """Compiled rules keyed by op name, plus ignores, base names and examples."""

    rules: dict[str, Rule] = field(default_factory=dict)
    plugins: dict[str, Rule] = field(default_factory=dict)
    ignores: list[IgnoreEntry] = field(default_factory=list)
    names: dict[str, tuple[str, ast.Pos]] = field(default_factory=dict)
    examples: list[ast.Example] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def lookup(self, op: str) -> Rule | None:
        """The rule of `op`, or None."""
        return self.rules.get(op)

    def plugin(self, extern_name: str) -> Rule | None:
        """The rule of a call_dps_packed plugin by its extern function name."""
        return self.plugins.get(extern_name)

    def ignored(self, op: str) -> IgnoreEntry | None:
        """The ignore entry covering `op`, if any."""
        for entry in self.ignores:
            if fnmatch.fnmatchcase(op, entry.pattern):
                return entry
        return None

    def status(self, op: str) -> str:
        """'ruled', 'ignored' or 'undecided'."""
        if op in self.rules:
            return "ruled"
        return "ignored" if self.ignored(op) else "undecided"

    def roles(self, op: str) -> tuple[str, ...] | None:
        """The argument roles the rules declare for `op`."""
        rule = self.rules.get(op)
        return rule.roles if rule else None

    def base_name(self, op: str) -> str:
        """The base name of calls of `op`: declared with `name`, else the last dotted part."""
        declared = self.names.get(op)
        return declared[0] if declared else op.rsplit(".", 1)[-1]


class _Loader:
    def __init__(self) -> None:
        self.rs = RuleSet()
        self.families: dict[str, tuple[ast.Family, list[CompiledEquation]]] = {}
        self.family_pos: dict[str, ast.Pos] = {}
        self.loaded: set[Path] = set()
        self.errors: list[Diagnostic] = []
        self.lines: dict[str, tuple[str, ...]] = {}

    def source(self, pos: ast.Pos) -> str:
        lines = self.lines.get(pos.file, ())
        return lines[pos.line - 1] if 0 < pos.line <= len(lines) else ""

    def error(self, pos: ast.Pos, message: str) -> None:
        self.errors.append(Diagnostic(pos.file, pos.line, pos.col, message, self.source(pos)))

    def load(self, path: Path, user: bool) -> None:
        resolved = path.resolve()
        if resolved in self.loaded:
            return
        self.loaded.add(resolved)
        try:
            rf = parse_file(path)
        except RuleFileError as err:
            self.errors.extend(err.diagnostics)
            return
        self.lines[rf.path] = rf.lines
        self.rs.files.append(rf.path)
        for item in rf.items:
            self.item(item, path)

    def compile(
        self, roles: tuple[str, ...], eqs: tuple[ast.Equation, ...]
    ) -> list[CompiledEquation]:
        compiled, errors = compile_equations(roles, eqs, self.source)
        for err in errors:
            self.error(err.pos, err.message)
        return compiled

    def define(
        self, op: str, pos: ast.Pos, rule: Rule, override: bool, table: dict[str, Rule], what: str
    ) -> None:
        old = table.get(op)
        if old is not None and not override:
            self.error(
                pos,
                f"{what} '{op}' is already defined at {old.pos}; write 'override {what} "
                f"{op}(...)' to redefine it",
            )
            return
        if old is None and override:
            self.error(pos, f"'override' of {what} '{op}', which has no rule to override")
            return
        table[op] = rule

    def item(self, item: ast.Item, path: Path) -> None:
        if isinstance(item, ast.Include):
            target = path.parent / item.path
            if not _is_file(target):
                self.error(
                    item.pos, f"included file '{item.path}' not found (looked in {path.parent})"
                )
                return
            self.load(target, user=True)
        elif isinstance(item, ast.Family):
            if item.name in self.families:
                self.error(
                    item.pos,
                    f"family '{item.name}' is already defined at {self.family_pos[item.name]}",
                )
                return
            self.families[item.name] = (item, self.compile(item.roles, item.equations))
            self.family_pos[item.name] = item.pos
        elif isinstance(item, ast.OpDef):
            if item.family is not None:
                fam = self.families.get(item.family)
                if fam is None:
                    self.error(item.pos, f"unknown family '{item.family}'")
                    return
                roles, eqs, fname = fam[0].roles, tuple(fam[1]), item.family
            else:
                roles, eqs, fname = (
                    item.roles,
                    tuple(self.compile(item.roles, item.equations)),
                    None,
                )
            for op, pos in item.ops:
                if not op.startswith("relax."):
                    self.error(pos, f"op name '{op}' must start with 'relax.'")
                    continue
                self.define(
                    op, pos, Rule(op, roles, eqs, pos, fname), item.override, self.rs.rules, "op"
                )
        elif isinstance(item, ast.PluginDef):
            eqs = tuple(self.compile(item.roles, item.equations))
            self.define(
                item.name,
                item.pos,
                Rule(item.name, item.roles, eqs, item.pos, None),
                item.override,
                self.rs.plugins,
                "plugin",
            )
        elif isinstance(item, ast.Ignore):
            for pattern, pos in item.patterns:
                self.rs.ignores.append(IgnoreEntry(pattern, item.reason, pos))
        elif isinstance(item, ast.NameDecl):
            self.rs.names[item.op] = (item.base, item.pos)
        elif isinstance(item, ast.Example):
            self.rs.examples.append(item)

    def finish(self) -> RuleSet:
        for op, rule in self.rs.rules.items():
            entry = self.rs.ignored(op)
            if entry is not None and not entry.pattern.endswith("*"):
                self.error(entry.pos, f"op '{op}' is both ignored and ruled (rule at {rule.pos})")
        if self.errors:
            raise RuleFileError(self.errors)
        return self.rs


def packs_enabled() -> bool:
    """Whether installed rule packs are read: not when MSC_RULES_PACKS is 0 (or off,
    false, no)."""
    return os.environ.get("MSC_RULES_PACKS", "1").strip().lower() not in _OFF


_OFF = {"0", "off", "false", "no"}


def load_rules(
    *paths: str | Path, builtin: bool = True, packs: bool | None = None
) -> RuleSet:
    """Load the rule library (unless builtin=False) and layer user rule files over it.

    With `builtin`, the rule packs of installed packages (entry points `msc_rules.rules`)
    come after the library, unless `packs` is False (None: see packs_enabled()).
    """
    loader = _Loader()
    files: list[tuple[Path, bool]] = []
    pack_of: dict[Path, Pack] = {}
    if builtin:
        files += [(p, False) for p in builtin_rule_files()]
        if packs_enabled() if packs is None else packs:
            for pack in rule_packs():
                for f in pack.files:
                    pack_of.setdefault(f, pack)
                    files.append((f, False))
    for p in paths:
        pp = Path(p)
        if not _is_file(pp):
            loader.errors.append(Diagnostic(str(pp), 1, 1, "rule file not found"))
            continue
        files.append((pp, True))
    # Loading makes tens of thousands of small objects; with the collector running, the
    # first load in a process (TVM's objects already alive) triggers full collections
    # that cost five times the load itself.
    with paused_gc():
        for path, user in files:
            before = len(loader.errors)
            loader.load(path, user)
            source = pack_of.get(path)
            if source is not None and len(loader.errors) > before:
                loader.errors[before:] = [
                    replace(d, message=f"{d.message} [{source.label()}]")
                    for d in loader.errors[before:]
                ]
        return loader.finish()


def _is_file(path: Path) -> bool:
    """Path.is_file() that says False instead of raising: it re-raises OSErrors other
    than "not found" (a name over NAME_MAX gives ENAMETOOLONG), which used to escape
    load_rules (found by tests/test_fuzz_dsl.py::
    test_include_with_an_overlong_name_is_a_rule_file_error)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class Pack:
    """A rule pack: the rule files one `msc_rules.rules` entry point ships."""

    name: str
    distribution: str
    files: tuple[Path, ...]

    def label(self) -> str:
        """Where the pack comes from, and how to do without it."""
        return (f"rule pack '{self.name}' of {self.distribution}; "
                "run without packs: --no-packs or MSC_RULES_PACKS=0")


def _distribution(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return f"the distribution providing '{ep.value}'"
    return f"distribution '{dist.name} {dist.version}'"


def rule_packs() -> list[Pack]:
    """The rule packs of installed packages (entry-point group `msc_rules.rules`), in
    entry-point name order."""
    from importlib.metadata import entry_points

    found: list[Pack] = []
    for ep in sorted(entry_points(group="msc_rules.rules"), key=lambda e: e.name):
        dist = _distribution(ep)
        try:
            target = ep.load()
            files = _as_paths(target() if callable(target) else target)
        except Exception as err:  # a broken pack must say which one it is
            pack = Pack(ep.name, dist, ())
            raise RuleFileError([Diagnostic(
                f"<entry point {ep.name} = {ep.value}>", 1, 1,
                f"cannot load: {type(err).__name__}: {err} [{pack.label()}]")]) from None
        found.append(Pack(ep.name, dist, tuple(files)))
    return found


def _as_paths(value: object) -> list[Path]:
    if isinstance(value, (str, Path)):
        p = Path(value)
        return sorted(p.glob("*.rules")) if p.is_dir() else [p]
    if isinstance(value, Iterable):
        out: list[Path] = []
        for v in value:
            out.extend(_as_paths(v))
        return out
    return []


def compile_check(
    paths: Sequence[str | Path], builtin: bool = True, packs: bool | None = None
) -> list[Diagnostic]:
    """Every diagnostic for `paths` layered over the library (empty when clean)."""
    try:
        load_rules(*paths, builtin=builtin, packs=packs)
    except RuleFileError as err:
        return err.diagnostics
    return []


__all__ = ["CompileError", "IgnoreEntry", "Pack", "Rule", "RuleSet", "compile_check", "load_rules",
           "packs_enabled", "rule_packs"]
