"""Generated equation code: laziness, None handling, evaluation order, safe literals."""

from __future__ import annotations

from typing import Any

import pytest

from msc_rules.dsl import ast
from msc_rules.dsl.compile import CompiledEquation, compile_equations
from msc_rules.dsl.parse import parse_text
from msc_rules.errors import RuleEvaluationError


class Recorder:
    """An Env that logs every read, so tests see what an equation evaluated."""

    def __init__(self, layouts: dict[str, Any], attrs: dict[str, Any] | None = None) -> None:
        self.layouts = layouts
        self.attrs = attrs or {}
        self.log: list[str] = []

    def layout(self, role: str) -> Any:
        self.log.append(role)
        return self.layouts.get(role)

    def field(self, role: str, index: int) -> Any:
        self.log.append(f"{role}[{index}]")
        value = self.layouts.get(role)
        return value[index] if isinstance(value, tuple) else None

    def ndim(self, role: str) -> int:
        self.log.append(f"ndim({role})")
        value = self.layouts.get(role)
        return len(value) if isinstance(value, str) else -1

    def shape(self, role: str) -> Any:
        self.log.append(f"shape({role})")
        return None

    def nfields(self, role: str) -> int:
        return 0

    def attr(self, name: str) -> Any:
        self.log.append(f"attr.{name}")
        return self.attrs.get(name)

    def run_state(self, key: str, factory: Any) -> Any:
        return factory()


def equations(body: str) -> list[CompiledEquation]:
    rf = parse_text(f"family f(a, b) {{\n{body}\n}}\n", "t.rules")
    fam = rf.items[0]
    assert isinstance(fam, ast.Family)
    eqs, errors = compile_equations(fam.roles, fam.equations)
    assert not errors
    return eqs


def run(expr: str, layouts: dict[str, Any], attrs: dict[str, Any] | None = None) -> Any:
    env = Recorder(layouts, attrs)
    (eq,) = equations(f"out = {expr}")
    return eq.fn(env), env.log


def test_coalesce_evaluates_the_right_side_only_when_the_left_is_none() -> None:
    assert run("a ?? b", {"a": "NC", "b": "CN"}) == ("NC", ["a"])
    assert run("a ?? b", {"b": "CN"}) == ("CN", ["a", "b"])
    assert run('a ?? ""', {"a": ""}) == ("", ["a"])  # known but falsy still wins


def test_and_or_short_circuit_with_python_truthiness() -> None:
    assert run("a and b", {"a": ""}) == ("", ["a"])
    assert run("a and b", {"a": "N", "b": "C"}) == ("C", ["a", "b"])
    assert run("a or b", {"a": "N"}) == ("N", ["a"])
    assert run("a or b", {}) == (None, ["a", "b"])
    assert run("not a", {"a": ""}) == (True, ["a"])


def test_conditional_evaluates_one_branch() -> None:
    assert run("attr.x ? a : b", {"a": "N", "b": "C"}, {"x": 1}) == ("N", ["attr.x", "a"])
    assert run("attr.x ? a : b", {"a": "N", "b": "C"}, {"x": []}) == ("C", ["attr.x", "b"])


def test_a_none_argument_makes_the_call_none_after_every_argument_ran() -> None:
    # suffix() does not accept none: the call is none, but ndim(b) still ran (in order)
    assert run("suffix(a, ndim(b))", {"b": "NC"}) == (None, ["a", "ndim(b)"])
    assert run("suffix(a, ndim(b))", {"a": "NCHW", "b": "NC"}) == ("HW", ["a", "ndim(b)"])
    # permute() accepts none for its axes
    assert run("permute(a, attr.axes)", {"a": "NC"}) == ("CN", ["a", "attr.axes"])
    assert run("suffix(a, none)", {"a": "NC"}) == (None, ["a"])


def test_lists_are_none_with_a_none_item_tuples_are_not() -> None:
    assert run("[a, b]", {"b": "C"}) == (None, ["a", "b"])
    assert run("[a, 1]", {"a": "N"}) == (["N", 1], ["a"])
    assert run("[]", {}) == ([], [])
    assert run("(a, b)", {"b": "C"}) == ((None, "C"), ["a", "b"])
    assert run("(a,)", {"a": "N"}) == (("N",), ["a"])


def test_arithmetic_indexing_and_fields() -> None:
    assert run("attr.n + 1", {}, {"n": 2}) == (3, ["attr.n"])
    assert run("attr.n + 1", {}) == (None, ["attr.n"])
    assert run("-attr.n", {}, {"n": 2}) == (-2, ["attr.n"])
    assert run("a[1]", {"a": ("N", "C")}) == ("C", ["a[1]"])
    assert run("a[attr.i]", {"a": "NC"}, {"i": 1}) == ("C", ["a", "attr.i"])
    with pytest.raises(RuleEvaluationError, match="cannot apply '//'"):
        run("attr.n // 0", {}, {"n": 2})
    with pytest.raises(RuleEvaluationError, match="cannot apply '-'"):
        run("-a", {"a": "NC"})
    with pytest.raises(RuleEvaluationError, match="index must be an integer"):
        run('a["x"]', {"a": "NC"})


def test_string_literals_are_values_not_source() -> None:
    for text in ["') or __import__('os') or ('", "{k0} env t0", "'''"]:
        assert run(f'"{text}"', {}) == (text, [])


def test_equations_of_one_shape_keep_their_own_values() -> None:
    eqs = equations("a = attr.x\nb = attr.y\nout = \"Q\"")
    env = Recorder({}, {"x": "X", "y": "Y"})
    assert [eq.fn(env) for eq in eqs] == ["X", "Y", "Q"]
    assert eqs[0].fn.__code__ is eqs[1].fn.__code__  # compiled once


def test_deep_expressions_split_into_functions() -> None:
    # deeper than CPython's parenthesis limit would allow in one expression
    pos = ast.Pos("t.rules", 1, 1)
    e: ast.Expr = ast.Name("a", pos)
    for _ in range(300):
        e = ast.Call("max", (e, ast.Attr("n", pos)), pos)
    eq = ast.Equation((ast.Port("out", None, pos),), e, False, pos, "deep")
    (compiled,), errors = compile_equations(("a",), (eq,))
    assert not errors
    env = Recorder({"a": 1}, {"n": 2})
    assert compiled.fn(env) == 2
    assert len(env.log) == 301


# ------------------------------------------------------------------- tuple field of a tensor

_TRAP_MODEL = """\
from tvm.script import ir as I, relax as R


@I.ir_module
class Module:
    @R.function
    def main(x: R.Tensor((1, 8, 4, 4), "float32"), b: R.Tensor((8,), "float32")):
        with R.dataflow():
            y = R.call_dps_packed("my_fused_bias_relu", (x, b),
                                  out_ty=R.Tensor((1, 8, 4, 4), "float32"))
            z = R.nn.relu(y)
            R.output(z)
        return z
"""


def _trap_module(tmp_path: Any) -> Any:
    from msc_rules.models import load_model

    path = tmp_path / "plugin_model.py"
    path.write_text(_TRAP_MODEL)
    return load_model(str(path))


def test_a_tuple_field_of_a_tensor_port_is_a_rule_file_error_at_its_first_site(
        tmp_path: Any) -> None:
    from msc_rules.dsl.ruleset import load_rules
    from msc_rules.engine import infer_layouts
    from msc_rules.errors import RuleFileError

    rules_file = tmp_path / "trap.rules"
    rules_file.write_text("plugin my_fused_bias_relu(data, bias) {\n    out  = data\n"
                          "    data = out\n    bias ?= out[1]\n}\n")
    mod = _trap_module(tmp_path)
    with pytest.raises(RuleFileError) as info:
        infer_layouts(mod, load_rules(rules_file))
    (d,) = info.value.diagnostics
    assert (d.file, d.line, d.col) == (str(rules_file), 4, 13)
    assert "'out' is a tensor here, not a tuple" in d.message
    assert "write letters(out, 1, 2)" in d.message
    assert d.format().splitlines()[1:] == ["        bias ?= out[1]", " " * 16 + "^"]
    # the advice works: the bias gets the channel letter
    rules_file.write_text(rules_file.read_text().replace("out[1]", "letters(out, 1, 2)"))
    result = infer_layouts(mod, load_rules(rules_file))
    params = mod["main"].params
    data = result.layout_of(params[0])
    assert len(data) == 4 and result.layout_of(params[1]) == data[1]

