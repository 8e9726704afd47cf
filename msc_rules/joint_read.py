"""annotate's one read of the module: the dependency view's read of the entry function
and the names plan, from one native walk (native/naming.cc's `read_and_name`).

Separately they are two walks (native/read.cc's `read`, by graph.build_view, and
naming.cc's `plan_names`, by naming.plan_names), and the second meets every node of the
module cold again. In one walk the read hands the naming each binding of the entry
function right after reading it, while its nodes are in cache. The view and the plan
are those of the two walks made apart, and each half keeps its own fallback: a function
the read refuses is read in Python (graph.read_fallbacks), a module the naming refuses
is named in Python (naming.fallbacks), and the other half stands. The view's other
global functions (those the entry calls) are read one by one, as build_view does.
"""

from __future__ import annotations

from typing import NamedTuple

import tvm

from . import native as _native
from .dsl.ruleset import RuleSet
from .ffi import items
from .graph import DependencyView, build_view, global_args
from .naming import NamePlan, _asker, _classify, _Namer, native_plan_of


class JointRead(NamedTuple):
    """The view of an entry function and the names plan of the module, read together."""

    view: DependencyView
    plan: NamePlan | None
    """The native walk's plan; None where the names are planned in Python (`names`)."""
    namer: _Namer
    """The Python naming walk, for that case."""

    def names(self) -> NamePlan:
        """The names plan: the native walk's, else planned now in Python (after the
        inference, in annotate: that walk's objects never sit beside the engine's)."""
        return self.plan if self.plan is not None else self.namer.run()


def read_and_name(mod: tvm.IRModule, rules: RuleSet, entry: str = "main") -> JointRead:
    """`build_view(mod, entry)` and what `plan_names(mod, rules, entry)` plans (no target,
    no wishes), from one native walk where the native path is on (else the Python walks:
    the plan then comes from `JointRead.names`)."""
    namer = _Namer(mod, rules, entry, "", None)
    gv = namer.entry_var()  # (an IRError unless it is a Relax function, as build_view's)
    native = _native.get()
    if native is None:
        return JointRead(build_view(mod, entry), None, namer)
    names, read = items(native.read_and_name(mod, gv, "", [], [], _classify, _asker(rules),
                                             mod[gv], entry, *global_args(mod)))
    return JointRead(build_view(mod, entry, read), native_plan_of(namer, names), namer)


__all__ = ["JointRead", "read_and_name"]
