"""Naming rules: a unique, stable name for every expression of a Relax module.

`plan_names(mod, ...)` walks the entry function once and returns a `NamePlan`
(node -> name, SharedRef markers) that `SetExprName` (passes.py) writes into spans.
Nothing here writes IR; the marker format stays in span.py.

Walk
    The entry function in program order, depth first, children of a binding's value
    before the binding itself (MSC §2). A global function is walked at its first call,
    before the call is named; a local function (`f = R.function`) at its binding.
    Functions the entry never reaches are not named. A node reached twice (a shared
    Constant, say) is named once: the same object always gets the same name.

Base names
    A call to an operator is named `RuleSet.base_name(op)` (a `name OP "base"` line in
    the rule files, else the op's last dotted component: `relax.nn.conv2d` ->
    `conv2d`). A `call_dps_packed` of an extern function is named after the extern's
    last dotted component. A bound Tuple is `tuple`, a bound ShapeExpr `shape`. An
    inline tuple or shape argument is named after its consumer like a constant
    (`strided_slice.begin`, `concat.data`, `broadcast_to.shape`; below), or `tuple` /
    `shape` when the consumer declares no role for it (reshape's target shape). A
    constant without a role is `const`.

Uniqueness, one namespace per run
    Duplicates get `_1`, `_2`, ... (three relus: `relu`, `relu_1`, `relu_2`), with a
    counter per base so naming stays linear. Names are claimed in three rounds, each
    in program order: (1) names already in a span (the base kept from an earlier run)
    and `var_names` wishes, (2) generated names, (3) names derived from other names
    (constants, views, tuple items, function calls; below). Because names already in
    spans are claimed before any new name, a rerun keeps every existing name as it is
    (running twice changes nothing) and a node that a pass inserted later cannot push
    an existing node's name aside. Two nodes carrying the same old name (a pass copied
    a span) keep it on the first and deduplicate the second.

`var_names`
    binding-var name -> wanted name (`.`, `/` and `::` become `_`). An explicit wish
    wins over a name already in the span (MSC let the span win, which made the
    option a no-op on an annotated module).

Tuple items
    `x = t[i]` is `<name of t>.<i>` (`batch_norm.0`); `t` a parameter gives
    `<param>.<i>`. Unlike MSC, a second item binding of the same tuple and index is
    deduplicated (`batch_norm.0_1`), so names stay unique in the module.

Constants: named after their consumer
    Argument roles come from the rule files (`RuleSet.roles(op)`, the one source of
    truth; a role names a positional argument). A constant used by a call as role `r`
    is named `<call name>.<r>`: `conv2d.weight`, `batch_norm.gamma`,
    `layer_norm.beta`, `matmul.weight`. Inside a tuple argument, field `j` of role
    `r` is `<call>.<r>.<j>`. The first consumer in program order names the constant;
    every later call that uses the same constant gets a `SharedRef` marker holding the
    first consumer's name (a tied embedding / lm_head pair, say). A constant whose
    consumer declares no role for that position (no rule for the op, or an argument
    beyond the declared roles) is `const`, `const_1`, ...

    Every role names the constant, not only weight-like ones: a bias added after a
    linear layer is `add.rhs`, an epsilon `add_3.rhs`, an RMSNorm scale
    `multiply_2.lhs`. A quantization engineer keys configs by tensor name and wants
    names that identify the layer a tensor belongs to and do not shift when an
    unrelated constant appears earlier in the model; `<consumer>.<role>` gives both,
    while `const_17` gives neither. Renaming a role in a rule file renames the
    constants it names; nothing else in this module knows roles.

Weights seen through views
    Frontends rarely hand a weight to its real consumer directly: torch's `Linear`
    imports as `w_t = permute_dims(W); y = matmul(x, w_t)`, and fp16 flows insert
    `astype`. A call of a *view op* (`VIEW_OPS`: permute_dims, reshape, expand_dims,
    squeeze, flatten, astype, wrap_param, layout_transform) whose data argument is a
    constant, or another view of one, is a view of that constant. A view is not a
    consumer: the constant is named after the first real consumer reached through its
    views, with the role it has there (`W` -> `matmul.weight`), and later real
    consumers get `SharedRef`. The view itself is named after what it views, plus its
    own base: `matmul.weight.permute_dims` (a chain appends one part per view). The
    weight a quantizer looks up keeps the consumer's name, the transposed copy says
    what it is, and both stay unique. A constant that only views ever use (a
    transposed weight returned as output) is named after its first view, which then
    gets an ordinary name (`permute_dims_4.data`). A constant bound to a variable
    (`c = R.const(..)`) is treated like one used inline. After `FoldConstant` the views
    are gone and the folded constant is new and unnamed; naming the folded module
    names it like any constant, after its consumer (`matmul.weight`, `add.rhs`).

Calls to other functions
    A call of a global function, or of a local function, is named after the
    function's `Unique` attribute if it has one, else after the first named call
    inside it that is not a view (the op the function wraps: a fused linear layer is
    its matmul, not the permute_dims of its weight; a function of views only takes
    its first call), else after its `Composite` kind with a
    `"<target>."` prefix stripped, else after the callee's name. As in MSC, the call
    shares the name of the first call inside the function it calls: the two live in
    different scopes (caller and callee), and tools that read fused modules expect the
    fused call to carry its anchor's name. This is the one deliberate exception to
    "unique in the module"; a second call of the same function is deduplicated.
    Constants passed to a function are named after the call, with the role of the
    argument taken from the composite kind (`Composite = "<target>.nn.conv2d"` looks
    up `relax.nn.conv2d`), else from the role with which the callee uses the matching
    parameter.

SharedRef
    Written on a real consumer (never on a view) whose constant an earlier real
    consumer took first. Markers can only be set, not removed: a stale SharedRef left
    by an earlier run on a module whose sharing has since changed stays.

Native walk
    With the native walk (msc_rules/native, `MSC_RULES_NATIVE`), `native/naming.cc`
    plans the names instead of `_Namer` and `_Resolver`: the same walk and the same
    three rounds of claims, step for step, so the same names, SharedRefs and edits.
    What this module decides by class (the tags, `_classify`) and what the rules say
    (`_asker`) it asks back here once per type, op and name, so this stays the one
    place that knows either. A module it does not know (a non-string `Unique`, a NUL
    or unit separator in a name, a callback that fails, ...) is planned here in
    Python, whole, and noted in `fallbacks`.

Cost
    One walk over the bindings and one over the names, hash lookups keyed by node
    handle, a counter per base name: linear in the module. The native walk keeps the
    names in one arena (an open-addressing table of ids, no string object per name) and
    hands them over as one text joined by the rebuild's separator, which the Name
    column passes on as it is (`rewrite.JoinedTexts`): no Python str per name stays
    alive through inference and the rewrite. Plan and edits together, natively: 3.9k
    instructions per binding on the conv chain of benchmarks/synthetic.py (1.6 named
    nodes per binding; callgrind, 5k bindings; 7.0k before the arena, the Python walk
    67k). Wall time, 10k bindings: 1.15 us per binding (0.28x TVM's Normalize in the
    same run).
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tvm
from tvm import relax

from . import native as _native
from . import span
from .dsl.ruleset import RuleSet
from .errors import IRError
from .ffi import items
from .rewrite import JoinedTexts, SpanEdits

Var = tvm.ir.expr.Var
Call = tvm.ir.expr.Call
Tuple = tvm.ir.expr.Tuple
TupleGetItem = tvm.ir.expr.TupleGetItem
Constant = tvm.ir.expr.GenericConst
GlobalVar = tvm.ir.expr.GlobalVar
Op = tvm.ir.Op
ShapeExpr = relax.ShapeExpr

VIEW_OPS = frozenset({
    "relax.permute_dims",
    "relax.reshape",
    "relax.expand_dims",
    "relax.squeeze",
    "relax.flatten",
    "relax.astype",
    "relax.wrap_param",
    "relax.layout_transform",
})
"""Ops whose result is a view of their data argument: a constant seen through them is
named after the real consumer behind them."""

_DPS_PACKED = "relax.call_dps_packed"

# node tags, by Python class (names go on tags below _T_SEQ)
_T_CALL, _T_CONST, _T_TUPLE, _T_SHAPE, _T_ITEM, _T_SEQ, _T_IF, _T_FUNC, _T_VAR, _T_OTHER = range(10)
_TAG_CLASSES = ((Var, _T_VAR), (Call, _T_CALL), (Constant, _T_CONST), (Tuple, _T_TUPLE),
                (ShapeExpr, _T_SHAPE), (TupleGetItem, _T_ITEM), (relax.SeqExpr, _T_SEQ),
                (relax.If, _T_IF), (relax.Function, _T_FUNC))
_TAGS: dict[type, int] = {}


def _tag(cls: type) -> int:
    """The tag of an IR class (cached; subclasses such as DataflowVar included)."""
    tag = next((t for c, t in _TAG_CLASSES if issubclass(cls, c)), _T_OTHER)
    _TAGS[cls] = tag
    return tag


_OpInfo = tuple[str, tuple[str, ...] | None, bool, bool]
"""(base name, roles, is a view op, is call_dps_packed)"""

# slot kinds
_CALL, _FCALL, _CONST, _TUPLE, _SHAPE, _ITEM = "call", "fcall", "const", "tuple", "shape", "item"
# resolution states
_TODO, _BUSY, _DONE = 0, 1, 2


class _Slot:
    """One node to name: a bound or inline Call, Constant, Tuple, TupleGetItem, ShapeExpr."""

    __slots__ = ("anchor", "base", "bound", "consumer", "fixed", "handle", "index", "kind",
                 "name", "node", "old", "old_current", "order", "role", "shared",
                 "shared_old", "src",
                 "src_name", "state", "sub", "text", "tops", "view_arg",
                 "view_const", "view_consumer", "view_role")

    def __init__(self, node: Any, handle: int, order: int, kind: str, base: str,
                 top: str) -> None:
        self.node = node
        self.handle = handle
        self.order = order  # its index in program order
        self.kind = kind
        self.base = base
        sp = node.span
        sn = None if sp is None else sp.source_name
        self.text = "" if sn is None else str(sn.name)  # the span's marker text
        # the name already in the span ("" if none), and whether it is under the
        # current key (a legacy `<name>` marker is rewritten as `<Name>`)
        self.old, self.old_current = _marker_in(self.text, span.NAME) if self.text else ("", True)
        self.fixed = self.old  # a name to claim in round 1 ("" if none)
        self.bound = False  # the value of a binding (not an inline argument)
        self.name = ""
        self.state = _TODO
        self.tops = [top]  # global functions whose bodies hold the node
        # constants, inline tuples and shapes: the first real consumer (a call slot),
        # the role there and the tuple field
        self.consumer: _Slot | None = None
        self.role: str | None = None
        self.sub: int | None = None
        self.view_consumer: _Slot | None = None  # the first view of it, as a fallback
        self.view_role: str | None = None
        # views: the data input's slot and the constant viewed
        self.src: _Slot | None = None
        self.view_const: _Slot | None = None
        # tuple items: the tuple's slot (or a param's name) and the index
        self.src_name = ""
        self.index = 0
        # calls: the constant they share with an earlier consumer; function calls:
        # the callee's first named call
        self.shared: _Slot | None = None
        self.shared_old = ("", True)
        self.view_arg = 0  # view calls: the handle of the data argument
        self.anchor: _Slot | None = None


class NamePlan:
    """The names (and SharedRef markers) that SetExprName writes."""

    def __init__(self, handles: Sequence[int] | bytes, labels: list[str] | JoinedTexts,
                 refs: dict[int, int], changes: list[tuple[str, Sequence[int], Sequence[int]]],
                 keep: Any = None) -> None:
        # (as the native walk hands them: int64 handles, the names in one str; no
        # Python object per node until asked, and the names go to the rebuild as they are)
        self._handles = np.frombuffer(handles, np.int64) if isinstance(handles, bytes) \
            else np.asarray(handles, np.int64)
        self._texts = labels
        self._labels = labels if isinstance(labels, list) else None
        self.refs = refs
        """node index -> index of the node whose name is its SharedRef."""
        self.changes = changes
        """Per global function whose markers change: node indices and what each gets
        (`_WRITE_NAME` | `_WRITE_REF`; an empty name is not written)."""
        self._keep = keep  # the module: its nodes stay alive, no other node takes a handle
        self._index: dict[int, int] | None = None  # handle -> first position (name_of)

    @property
    def labels(self) -> list[str]:
        """The names, in program order."""
        if self._labels is None:
            self._labels = list(self._texts)
        return self._labels

    @property
    def handles(self) -> list[int]:
        """The node of each name (its handle, `__chandle__()`), in program order."""
        return self._handles.tolist()

    def names(self) -> list[str]:
        """Every name, in program order."""
        return list(self.labels)

    def name_of(self, node: Any) -> str:
        """The planned name of `node` ("" if it is not named)."""
        chandle = getattr(node, "__chandle__", None)
        if chandle is None:
            return ""
        if self._index is None:  # (made once: a lookup per node stays linear in all)
            index: dict[int, int] = {}
            for i, h in enumerate(self._handles.tolist()):
                index.setdefault(h, i)
            self._index = index
        at = self._index.get(chandle())
        return "" if at is None else self.labels[at]

    def shared_refs(self) -> dict[str, str]:
        """call name -> the name of the call that consumed its shared constant first."""
        labels = self.labels
        return {labels[i]: labels[r] for i, r in self.refs.items()}

    def edits(self, columns: bool = True) -> dict[str, SpanEdits]:
        """The markers to write, per global function (only those that change): two
        marker columns per function, Name then SharedRef (`SpanEdits.add_column`: flat
        arrays the native rebuild takes as they are, no Python object per node), or
        with `columns=False` one marker tuple per node in `SpanEdits.values`. Both
        write the same markers."""
        if not columns:
            return self._edit_dicts()
        refs, texts = self.refs, self._texts
        handles = self._handles
        edits: dict[str, SpanEdits] = {}
        for top, nodes, what in self.changes:
            e = edits[top] = SpanEdits()
            at = np.asarray(nodes, dtype=np.int64)
            flags = np.asarray(what, dtype=np.int64)
            named = at[(flags & _WRITE_NAME) != 0]
            if len(named) == len(texts):  # every node, in order (a module never named)
                e.add_column(span.NAME, texts, values=handles.tobytes())
            elif len(named):
                labels = self.labels
                e.add_column(span.NAME, [labels[i] for i in named.tolist()],
                             values=handles[named].tobytes())
            shared = at[(flags & _WRITE_REF) != 0]
            if len(shared):
                labels = self.labels
                e.add_column(span.SHARED_REF, [labels[refs[i]] for i in shared.tolist()],
                             values=handles[shared].tobytes())
        return edits

    def _edit_dicts(self) -> dict[str, SpanEdits]:
        labels, handles, refs = self.labels, self.handles, self.refs
        n, r = span.NAME, span.SHARED_REF
        edits: dict[str, SpanEdits] = {}
        for top, nodes, what in self.changes:
            e = edits[top] = SpanEdits()
            # (a fresh tuple per node: a name is rarely shared, interning would gain nothing)
            e.values = {handles[i]: ((n, labels[i]),) if w == _WRITE_NAME else
                        ((n, labels[i]), (r, labels[refs[i]])) if w == _WRITE_BOTH else
                        ((r, labels[refs[i]]),)
                        for i, w in zip(nodes, what)}
        return edits


_WRITE_NAME, _WRITE_REF = 1, 2
_WRITE_BOTH = _WRITE_NAME | _WRITE_REF


def _marker_in(text: str, key: str) -> tuple[str, bool]:
    """The marker `key` in span text, and whether it is written under the current key."""
    value = span.get_marker_text(text, key)
    return value, not value or span.set_marker_text(text, key, value) == text


def legalize(name: str) -> str:
    """A `var_names` wish as a name: `::`, `.` and `/` become `_`."""
    return name.replace("::", "_").replace(".", "_").replace("/", "_")


def _attr(func: Any, key: str) -> str:
    attrs = func.attrs
    if attrs is None or key not in attrs:
        return ""
    return str(attrs[key])


class _Func:
    """A walked function: its params and the first call named in its body."""

    __slots__ = ("anchor", "composite", "first", "name", "params", "unique")

    def __init__(self, name: str, func: Any) -> None:
        self.name = name
        self.params = [p.__chandle__() for p in func.params]
        self.anchor: _Slot | None = None  # the first call of an op that is not a view
        self.first: _Slot | None = None  # the first call of all
        self.unique = _attr(func, "Unique")
        self.composite = _attr(func, "Composite")


class _Namer:
    def __init__(self, mod: tvm.IRModule, rules: RuleSet, entry: str, target: str,
                 var_names: Mapping[str, str] | None) -> None:
        self.mod = mod
        self.rules = rules
        self.entry = entry
        self.target = target
        self.var_names = {k: legalize(v) for k, v in (var_names or {}).items() if v}
        self.slots: list[_Slot] = []
        # IR nodes are keyed by handle (`__chandle__()`): Python wrappers are fresh on
        # every access and TVM's `__eq__` is slow on dictionary hits
        self.slot_of: dict[int, _Slot] = {}
        self.var_slot: dict[int, _Slot] = {}  # binding var -> slot of its value
        self.var_const: dict[int, _Slot] = {}  # var -> constant it is (a view of)
        self.var_param: dict[int, int] = {}  # var -> the param it is (a view of)
        self.param_role: dict[int, str] = {}  # param -> role of its first consumer
        self.globals = {gv.name_hint: gv for gv in mod.get_global_vars()}
        self.funcs: dict[Any, _Func] = {}  # global name / local var handle -> function
        self.stack: list[_Func] = []
        self.top = entry
        self.op_info: dict[int, _OpInfo] = {}

    # -- slots
    def new_slot(self, node: Any, kind: str, base: str) -> _Slot:
        h = node.__chandle__()
        s = _Slot(node, h, len(self.slots), kind, base, self.top)
        self.slots.append(s)
        self.slot_of[h] = s
        return s

    # -- functions
    def function(self, key: Any, name: str, func: Any) -> _Func:
        info = _Func(name, func)
        self.funcs[key] = info
        for p in info.params:
            self.var_param[p] = p
        self.stack.append(info)
        try:
            self.visit(func.body)
        finally:
            self.stack.pop()
        return info

    def global_function(self, gv: Any) -> _Func | None:
        name = gv.name_hint
        info = self.funcs.get(name)
        if info is not None:
            return info
        func = self.mod[gv]
        if not isinstance(func, relax.Function):
            return None
        saved, self.top = self.top, name
        try:
            return self.function(name, name, func)
        finally:
            self.top = saved

    def seq(self, e: Any) -> None:
        for block in items(e.blocks):
            for b in items(block.bindings):
                self.binding(b)
        self.visit(e.body)

    def binding(self, b: Any) -> None:
        var, value = b.var, b.value
        tag = _TAGS.get(type(value))
        if tag is None:
            tag = _tag(type(value))
        if tag == _T_FUNC:
            outer = f"{self.stack[-1].name}." if self.stack else ""
            self.function(var.__chandle__(), f"{outer}{var.name}", value)
            return
        if tag == _T_VAR:  # an alias: the var is whatever it aliases
            self.alias(var, value)
            return
        s = self.visit(value)
        if s is None:
            return
        h = var.__chandle__()
        self.var_slot[h] = s
        s.bound = True
        if self.var_names:
            wish = self.var_names.get(str(var.name))
            if wish:
                s.fixed = wish
        if s.kind == _CONST:
            self.var_const[h] = s
        elif s.view_const is not None:
            self.var_const[h] = s.view_const
        elif s.view_arg:
            p = self.var_param.get(s.view_arg)
            if p is not None:  # a view of a parameter: its consumer's role is the param's
                self.var_param[h] = p

    def alias(self, var: Any, value: Any) -> None:
        h, src = var.__chandle__(), value.__chandle__()
        s = self.var_slot.get(src)
        if s is not None:
            self.var_slot[h] = s
        c = self.var_const.get(src)
        if c is not None:
            self.var_const[h] = c
        p = self.var_param.get(src)
        if p is not None:
            self.var_param[h] = p

    # -- expressions
    def visit(self, e: Any) -> _Slot | None:
        cls = type(e)
        tag = _TAGS.get(cls)
        if tag is None:
            tag = _tag(cls)
        if tag < _T_SEQ:  # a node that gets a name
            s = self.slot_of.get(e.__chandle__())
            if s is not None:
                if self.top not in s.tops:
                    s.tops.append(self.top)
                return s
            if tag == _T_CALL:
                return self.call(e)
            if tag == _T_CONST:
                return self.new_slot(e, _CONST, "const")
            if tag == _T_TUPLE:
                for f in items(e.fields):
                    self.visit(f)
                return self.new_slot(e, _TUPLE, "tuple")
            if tag == _T_SHAPE:
                return self.new_slot(e, _SHAPE, "shape")
            return self.item(e)
        if tag == _T_SEQ:
            self.seq(e)
        elif tag == _T_IF:
            self.visit(e.cond)
            self.visit(e.true_branch)
            self.visit(e.false_branch)
        elif tag == _T_FUNC:
            self.function(e.__chandle__(), "<lambda>", e)
        return None

    def item(self, e: Any) -> _Slot:
        tv = e.tuple_value
        is_var = isinstance(tv, Var)
        src = self.var_slot.get(tv.__chandle__()) if is_var else self.visit(tv)
        s = self.new_slot(e, _ITEM, "")
        s.index = int(e.index)
        s.src = src
        if src is None:
            s.src_name = str(tv.name) if is_var else "tuple"
        return s

    def op_of(self, op: Any) -> _OpInfo:
        """(base name, roles, is a view op, is call_dps_packed) of an Op, cached."""
        h = op.__chandle__()
        info = self.op_info.get(h)
        if info is None:
            name = str(op.name)
            info = (self.rules.base_name(name), self.rules.roles(name), name in VIEW_OPS,
                    name == _DPS_PACKED)
            self.op_info[h] = info
        return info

    def call(self, e: Any) -> _Slot:
        args = items(e.args)
        for a in args:
            self.visit(a)
        op = e.op
        roles: tuple[str, ...] | None = None
        is_view = False
        callee: _Func | None = None
        packed_roles: tuple[str, ...] | None = None
        if type(op) is Op:
            base, roles, is_view, packed = self.op_of(op)
            if packed and args and isinstance(args[0], relax.ExternFunc):
                sym = str(args[0].global_symbol)
                base = sym.rsplit(".", 1)[-1] or base
                rule = self.rules.plugin(sym)
                packed_roles = rule.roles if rule is not None else None
        elif isinstance(op, GlobalVar):
            callee = self.global_function(op)
            base = op.name_hint
        elif isinstance(op, Var):
            callee = self.funcs.get(op.__chandle__())
            base = str(op.name)
        else:
            base = "call"
        kind = _CALL
        if callee is not None:
            kind = _FCALL
            roles = self.callee_roles(callee)
            kind_name = self.composite_kind(callee)
            base = kind_name or base
        s = self.new_slot(e, kind, base)
        if callee is not None:
            s.anchor = callee.anchor or callee.first
            if callee.unique and not s.fixed:
                s.fixed = callee.unique
        if self.stack:
            func = self.stack[-1]
            if func.first is None:
                func.first = s
            if func.anchor is None and not is_view:
                func.anchor = s
        if s.text:
            s.shared_old = _marker_in(s.text, span.SHARED_REF)
        if is_view and args:
            s.view_arg = args[0].__chandle__()
        # constants (and params) consumed by this call
        for i, a in enumerate(args):
            role = (roles[i] or None) if roles is not None and i < len(roles) else None
            if packed_roles is not None and i == 1 and isinstance(a, Tuple):
                for j, f in enumerate(a.fields):
                    r = packed_roles[j] if j < len(packed_roles) else None
                    self.consume(s, f, r, None, False)
            elif isinstance(a, Tuple):
                self.own(s, a, role)
                for j, f in enumerate(a.fields):
                    self.consume(s, f, role, j, False)
            elif isinstance(a, ShapeExpr):
                self.own(s, a, role)
            else:
                self.consume(s, a, role, None, is_view and i == 0)
        return s

    def own(self, s: _Slot, a: Any, role: str | None) -> None:
        """An inline tuple or shape argument is named after its first consumer."""
        t = self.slot_of.get(a.__chandle__())
        if t is not None and not t.bound and t.consumer is None:
            t.consumer, t.role = s, role

    def consume(self, s: _Slot, a: Any, role: str | None, sub: int | None,
                view: bool) -> None:
        if isinstance(a, Constant):
            c: _Slot | None = self.slot_of.get(a.__chandle__())
        elif isinstance(a, Var):
            h = a.__chandle__()
            c = self.var_const.get(h)
            if c is None:
                p = self.var_param.get(h)
                if p is not None and role is not None and not view and p not in self.param_role:
                    self.param_role[p] = role
                return
        else:
            return
        if c is None:
            return
        if view:
            s.view_const = c
            s.src = self.var_slot.get(a.__chandle__()) if isinstance(a, Var) else c
            if c.view_consumer is None:
                c.view_consumer, c.view_role = s, role
            return
        if c.consumer is None:
            c.consumer, c.role, c.sub = s, role, sub
        elif c.consumer is not s and s.shared is None:
            s.shared = c

    def callee_roles(self, callee: _Func) -> tuple[str, ...] | None:
        kind = self.composite_kind(callee)
        if kind:
            for op in (f"relax.{kind}", kind):
                r = self.rules.roles(op)
                if r is not None:
                    return r
        roles = tuple(self.param_role.get(p, "") for p in callee.params)
        return roles if any(roles) else None

    def composite_kind(self, callee: _Func) -> str:
        kind = callee.composite
        if kind and self.target and kind.startswith(self.target + "."):
            kind = kind[len(self.target) + 1:]
        return kind

    # -- resolution
    def entry_var(self) -> Any:
        """The entry function's GlobalVar (an IRError if it is not a Relax function)."""
        gv = self.globals.get(self.entry)
        if gv is None or not isinstance(self.mod[gv], relax.Function):
            names = ", ".join(sorted(n for n, g in self.globals.items()
                                     if isinstance(self.mod[g], relax.Function)))
            raise IRError(f"entry function '{self.entry}' is not a Relax function of the "
                          f"module (functions: {names or 'none'})")
        return gv

    def run(self) -> NamePlan:
        gv = self.entry_var()
        try:
            self.global_function(gv)
            _Resolver(self.slots).resolve()
        except RecursionError:
            raise IRError("module nests too deeply to walk", function=self.entry) from None
        return _plan(self.slots, self.mod)


class _Resolver:
    def __init__(self, slots: list[_Slot]) -> None:
        self.slots = slots
        self.taken: set[str] = set()
        self.counter: dict[str, int] = {}
        self.aliased: set[str] = set()

    def claim(self, base: str) -> str:
        taken = self.taken
        if base not in taken:
            taken.add(base)
            return base
        k = self.counter.get(base, 0)
        while True:
            k += 1
            cand = f"{base}_{k}"
            if cand not in taken:
                break
        self.counter[base] = k
        taken.add(cand)
        return cand

    @staticmethod
    def derived(s: _Slot) -> bool:
        """Whether `s` takes its name from another slot (round 3)."""
        kind = s.kind
        if kind == _ITEM:
            return True
        if kind == _CONST:
            if s.consumer is not None:
                return s.role is not None
            return s.view_consumer is not None and s.view_role is not None
        if kind == _CALL:
            c = s.view_const
            return c is not None and c.consumer is not None
        if kind == _FCALL:
            return s.anchor is not None
        # inline tuples and shapes
        return s.consumer is not None and s.role is not None

    def resolve(self) -> None:
        slots = self.slots
        # round 1: names already in spans and explicit wishes, first come first kept
        clash: list[_Slot] = []
        for s in slots:
            if s.fixed and s.kind == _FCALL and s.anchor is not None \
                    and s.anchor.fixed == s.fixed:
                continue  # it shares its anchor's name (an earlier run): derive it again
            if s.fixed:
                if s.fixed in self.taken:
                    clash.append(s)
                else:
                    self.taken.add(s.fixed)
                    s.name, s.state = s.fixed, _DONE
        for s in clash:
            s.name, s.state = self.claim(s.fixed), _DONE
        # round 2: generated names; round 3: derived ones (recursively, in order)
        later: list[_Slot] = []
        for s in slots:
            if s.state == _DONE:
                continue
            if self.derived(s):
                later.append(s)
            else:
                s.name, s.state = self.claim(s.base), _DONE
        for s in later:
            self.name(s)

    def name(self, s: _Slot) -> str:
        if s.state == _DONE:
            return s.name
        if s.state == _BUSY:  # a cycle cannot happen in valid IR; stay total anyway
            return s.base or s.kind
        s.state = _BUSY
        kind = s.kind
        if kind == _ITEM:
            prefix = self.name(s.src) if s.src is not None else s.src_name
            s.name = self.claim(f"{prefix}.{s.index}")
        elif kind == _CONST:
            owner = s.consumer if s.consumer is not None else s.view_consumer
            role = s.role if s.consumer is not None else s.view_role
            assert owner is not None
            text = f"{self.name(owner)}.{role}"
            if s.consumer is not None and s.sub is not None:
                text += f".{s.sub}"
            s.name = self.claim(text)
        elif kind in (_TUPLE, _SHAPE):
            assert s.consumer is not None
            s.name = self.claim(f"{self.name(s.consumer)}.{s.role}")
        elif kind == _CALL:
            assert s.src is not None
            s.name = self.claim(f"{self.name(s.src)}.{s.base}")
        else:  # a function call shares its anchor's name (once)
            assert s.anchor is not None
            text = self.name(s.anchor)
            if text in self.aliased:
                text = self.claim(text)
            self.aliased.add(text)
            s.name = text
        s.state = _DONE
        return s.name


def _plan(slots: list[_Slot], mod: tvm.IRModule) -> NamePlan:
    """The plan of resolved slots: what changes is decided as the native walk does."""
    refs: dict[int, int] = {}
    changes: dict[str, tuple[list[int], list[int]]] = {}
    # (most slots sit in the function of the slot before)
    last_top: str | None = None
    nodes: list[int] = []
    writes: list[int] = []
    for i, s in enumerate(slots):
        shared = s.shared
        name = s.name
        name_changes = name != s.old or not s.old_current
        if shared is None or shared.consumer is None:
            if not name_changes:
                continue
            what = _WRITE_NAME if name else 0
        else:
            refs[i] = shared.consumer.order
            ref = shared.consumer.name
            ref_changes = bool(ref) and (ref, True) != s.shared_old
            if not name_changes and not ref_changes:
                continue
            what = (_WRITE_NAME if name_changes and name else 0) | (
                _WRITE_REF if ref_changes else 0)
        # (an empty name is not written, but its function still gets its edits)
        for top in s.tops:
            if top != last_top:
                got = changes.get(top)
                if got is None:
                    got = changes[top] = ([], [])
                last_top, (nodes, writes) = top, got
            if what:
                nodes.append(i)
                writes.append(what)
    return NamePlan([s.handle for s in slots], [s.name for s in slots], refs,
                    [(top, nodes, what) for top, (nodes, what) in changes.items()], mod)


def _classify(node: Any) -> int:
    """For the native walk: the tag of `node`'s class, with the flags of the classes
    `_Namer.call` tests (naming.cc asks once per type)."""
    cls = type(node)
    tag = _TAGS.get(cls)
    if tag is None:
        tag = _tag(cls)
    return (tag | (_IS_OP if cls is Op else 0)
            | (_IS_GLOBAL_VAR if issubclass(cls, GlobalVar) else 0)
            | (_IS_EXTERN if issubclass(cls, relax.ExternFunc) else 0))


_IS_OP, _IS_GLOBAL_VAR, _IS_EXTERN = 16, 32, 64  # naming.cc's kIsOp, ...


def _asker(rules: RuleSet) -> Any:
    """For the native walk: what the rules say of an op (0: its `_OpInfo`), a plugin
    symbol (1: its roles) or an op name (2: its roles), asked once per name."""

    def ask(kind: int, name: str) -> Any:
        if kind == 0:
            return (rules.base_name(name), rules.roles(name), name in VIEW_OPS,
                    name == _DPS_PACKED)
        if kind == 1:
            rule = rules.plugin(name)
            return None if rule is None else rule.roles
        return rules.roles(name)

    return ask


fallbacks: list[tuple[str, str]] = []
"""(entry function, reason) of the last plans the native walk handed to Python."""


def _native_plan(native: Any, namer: _Namer, gv: Any) -> NamePlan | None:
    """The plan by the native walk (native/naming.cc), or None if it refused the module."""
    wishes = namer.var_names
    try:
        out = native.plan_names(namer.mod, gv, namer.target, list(wishes), list(wishes.values()),
                                _classify, _asker(namer.rules))
    except Exception as err:  # a node or attribute it does not know: Python plans it all
        out = str(err) or repr(err)
    return native_plan_of(namer, out)


def native_plan_of(namer: _Namer, out: Any) -> NamePlan | None:
    """The plan from the output of the native naming (`plan_names`'s, or the first of
    `read_and_name`'s), or None (noted in `fallbacks`) if it refused the module: then
    `out` is the text of its error."""
    try:
        if isinstance(out, str):
            raise ValueError(out)
        blob, handles, ref_bytes, tops, per_top = items(out)
        labels = JoinedTexts(blob.decode(), len(handles) // 8)
    except Exception as err:
        _native.note_refusal(fallbacks, (namer.entry, _native.refusal(err)))
        return None
    pairs = array("i")
    pairs.frombytes(ref_bytes)
    changes: list[tuple[str, Sequence[int], Sequence[int]]] = []
    for top, got in zip(items(tops), items(per_top)):
        a = array("i")
        a.frombytes(got)
        changes.append((str(top), a[0::2], a[1::2]))
    return NamePlan(bytes(handles), labels, dict(zip(pairs[0::2], pairs[1::2])), changes,
                    namer.mod)


def plan_names(mod: tvm.IRModule, rules: RuleSet | None = None, entry_name: str = "main",
               target: str = "", var_names: Mapping[str, str] | None = None) -> NamePlan:
    """Compute the names of every Call, Constant, Tuple, TupleGetItem and ShapeExpr of
    `entry_name` and the functions it calls (see the module docstring)."""
    if rules is None:
        from .library import default_rules

        rules = default_rules()
    namer = _Namer(mod, rules, entry_name, target, var_names)
    gv = namer.entry_var()
    native = _native.get()
    if native is not None:
        plan = _native_plan(native, namer, gv)
        if plan is not None:
            return plan
    return namer.run()


__all__ = ["VIEW_OPS", "NamePlan", "fallbacks", "legalize", "plan_names"]
