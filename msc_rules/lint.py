"""What `msc-rules check` says about a user rule file beyond its errors: which ops and
plugins it adds or overrides, a warning (with a "did you mean") for an op that no
registry has, which is most often a typo that would otherwise never fire, and a warning
for a tuple field read in a plugin rule (`bias ?= out[1]` meant as axis 1: a plugin's
output is most often a tensor, and the mistake only shows where the rule meets a call)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tvm

from .dsl import ast
from .dsl.parse import parse_file
from .errors import Diagnostic


@dataclass
class FileSummary:
    """The ops and plugins one rule file adds or overrides, and its warnings."""

    path: str
    adds: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    def lines(self) -> list[str]:
        """`FILE: adds op a, plugin b; overrides op c` (nothing for a file of examples)."""
        parts = []
        if self.adds:
            parts.append("adds " + ", ".join(self.adds))
        if self.overrides:
            parts.append("overrides " + ", ".join(self.overrides))
        return [f"{self.path}: {'; '.join(parts)}"] if parts else []


def registered_ops() -> list[str]:
    """Every op name registered with TVM (custom ops too, once their module is imported)."""
    return sorted(str(n) for n in tvm.ir.Op.list_op_names())


def unknown_op_warning(op: str, pos: ast.Pos, source: str, known: Sequence[str]) -> Diagnostic:
    """The warning for an op no registry has, with the closest registered names."""
    close = difflib.get_close_matches(op, known, n=3, cutoff=0.6)
    hint = (" (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)") if close else ""
    return Diagnostic(
        pos.file, pos.line, pos.col,
        f"op '{op}' is not registered with TVM{hint}; a rule for it never fires unless "
        "a module registers it (load that module with --import MODULE)",
        source, severity="warning")


def summarize(path: str | Path, known: Sequence[str] | None = None) -> FileSummary:
    """The summary of one rule file (parsed; it is assumed to compile)."""
    rf = parse_file(path)
    ops = set(registered_ops() if known is None else known)
    ordered = sorted(ops)
    summary = FileSummary(rf.path)
    for item in rf.items:
        if isinstance(item, ast.OpDef):
            for op, pos in item.ops:
                (summary.overrides if item.override else summary.adds).append(f"op {op}")
                if not item.override and op not in ops:
                    line = rf.lines[pos.line - 1] if 0 < pos.line <= len(rf.lines) else ""
                    summary.warnings.append(unknown_op_warning(op, pos, line, ordered))
        elif isinstance(item, ast.PluginDef):
            (summary.overrides if item.override else summary.adds).append(f"plugin {item.name}")
            for role, index, pos in _field_reads(item.equations):
                line = rf.lines[pos.line - 1] if 0 < pos.line <= len(rf.lines) else ""
                summary.warnings.append(Diagnostic(
                    pos.file, pos.line, pos.col,
                    f"'{role}[{index}]' reads field {index} of a tuple: right only if "
                    f"'{role}' is a tuple at this plugin's calls; for the letter of axis "
                    f"{index} of a tensor write letters({role}, {index}, {index + 1})",
                    line, severity="warning"))
    return summary


def _field_reads(equations: Sequence[ast.Equation]) -> list[tuple[str, int, ast.Pos]]:
    """Every `port[i]` an equation reads or defines, in file order."""
    found: list[tuple[str, int, ast.Pos]] = []

    def walk(e: ast.Expr) -> None:
        port = ast.port_ref(e)
        if port is not None:
            if port[1] is not None:
                found.append((port[0], port[1], port[2]))
            return
        for sub in _children(e):
            walk(sub)

    for eq in equations:
        for t in eq.targets:
            if t.index is not None:
                found.append((t.role, t.index, t.pos))
        walk(eq.expr)
    return sorted(found, key=lambda f: (f[2].line, f[2].col))


def _children(e: ast.Expr) -> tuple[ast.Expr, ...]:
    if isinstance(e, ast.Call):
        return e.args
    if isinstance(e, ast.Index):
        return (e.base, e.index)
    if isinstance(e, (ast.TupleExpr, ast.ListExpr)):
        return e.items
    if isinstance(e, ast.Cond):
        return (e.test, e.then, e.other)
    if isinstance(e, ast.BinOp):
        return (e.left, e.right)
    if isinstance(e, ast.UnOp):
        return (e.operand,)
    return ()


def file_summaries(paths: Sequence[str | Path]) -> list[FileSummary]:
    """summarize() of every file, reading TVM's op registry once."""
    known = registered_ops()
    return [summarize(p, known) for p in paths]


__all__ = ["FileSummary", "file_summaries", "registered_ops", "summarize", "unknown_op_warning"]
