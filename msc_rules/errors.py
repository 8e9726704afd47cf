"""The error hierarchy: every error msc_rules raises at a user is one of these.

Rule-file errors carry positions (file, line, column, the source line); IR errors
name the function and the binding. Nothing else is meant to escape the public API.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import tvm_ffi

_raised = threading.local()


class MscRulesError(Exception):
    """Base class of every error msc_rules raises on bad input.

    Errors raised inside a TVM pass cross TVM's C++ pass machinery, which rebuilds
    them from their message alone. `remember` keeps the original on this thread so the
    rebuilt error gets its fields (function, bindings, diagnostics) back.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        last = getattr(_raised, "last", None)
        if last is not None and type(last) is type(self) and args == (str(last),):
            self.__dict__.update(last.__dict__)
            _raised.last = None


def remember(err: MscRulesError) -> None:
    """Keep `err` for the copy TVM's pass machinery will rebuild (see MscRulesError)."""
    _raised.last = err


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a rule file, at a position."""

    file: str
    line: int
    col: int
    message: str
    source_line: str = ""
    severity: str = "error"

    def format(self) -> str:
        """Render as `file:line:col: error: message` (or `warning:`), the line, and a
        caret."""
        head = f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message}"
        if not self.source_line:
            return head
        text = self.source_line.rstrip("\n").expandtabs(1)
        caret = " " * (max(self.col, 1) - 1) + "^"
        return f"{head}\n    {text}\n    {caret}"


class RuleFileError(MscRulesError):
    """One or more errors in rule files; `diagnostics` lists them in order."""

    def __init__(self, diagnostics: list[Diagnostic] | str) -> None:
        if isinstance(diagnostics, str):  # rebuilt from its message by TVM
            self.diagnostics: list[Diagnostic] = []
            super().__init__(diagnostics)
            return
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.format() for d in self.diagnostics))


class IRError(MscRulesError):
    """A problem with the module being annotated, naming the function and binding."""

    def __init__(self, message: str, function: str = "", binding: str = "") -> None:
        self.function = function
        self.binding = binding
        where = ""
        if function:
            where = f"in function '{function}'"
            if binding:
                where += f", binding '{binding}'"
            where += ": "
        super().__init__(where + message)



class MissingLayoutError(IRError):
    """SetExprLayout(allow_missing=False) found bindings without a layout."""

    def __init__(self, function: str, bindings: list[str] | None = None) -> None:
        if bindings is None:  # rebuilt from its message by TVM
            self.bindings: list[str] = []
            self.function = self.binding = ""
            MscRulesError.__init__(self, function)
            return
        self.bindings = list(bindings)
        listed = ", ".join(bindings[:50]) + (" ..." if len(bindings) > 50 else "")
        super().__init__(
            f"{len(bindings)} binding(s) have no layout: {listed}", function=function
        )
        self.binding = bindings[0] if bindings else ""


class GuessedWeightError(IRError):
    """Weights (constants or parameters reaching a conv, matmul or norm) whose layout is
    guessed: initial letters, or letters derived only from guesses (`annotate --strict`)."""

    def __init__(self, function: str, weights: list[str] | None = None) -> None:
        if weights is None:  # rebuilt from its message by TVM
            self.weights: list[str] = []
            self.function = self.binding = ""
            MscRulesError.__init__(self, function)
            return
        self.weights = list(weights)
        listed = "; ".join(weights[:20]) + (" ..." if len(weights) > 20 else "")
        super().__init__(
            f"{len(weights)} weight(s) have a guessed layout, no rule gave evidence: {listed}",
            function=function)


class RuleEvaluationError(MscRulesError):
    """A rule function was applied to values it cannot take (caught by the engine)."""


class PruneError(MscRulesError):
    """A prune selection that cannot be applied: an unknown group, kept indices out of
    range, repeated or empty, a group that is not exact or reaches a model input or
    output, or a weight that cannot be sliced. The module is left unchanged."""


class NativeBuildError(MscRulesError):
    """The native walk could not be built or loaded while MSC_RULES_NATIVE=1 asked for it."""


for _cls in (MscRulesError, RuleFileError, IRError, MissingLayoutError, GuessedWeightError,
             RuleEvaluationError, NativeBuildError, PruneError):
    tvm_ffi.register_error(_cls)
