"""Issue 11 acceptance: letters users can prune by.

Every model of ``letter_models`` imported every way has no op-semantics property
violation and no weight-role violation (``letter_props``); the four imports of a model
agree on the layouts of its weights; and the cases the issue names: a scalar add claims
no semantics, a 2-D-index embedding gives the indices' letters plus a new one, the
bundled cnn shows tied biases and IO/OI weights, and ``explain`` of a tensor with initial
letters lists the rules that were considered.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections import defaultdict
from pathlib import Path

import letter_models as lm
import letter_props as lp
import pytest
import torch
import tvm

from msc_rules import InferenceResult, cli, infer_layouts
from msc_rules import layout as L

COMBOS = [(m, r) for m in lm.MODELS for r in lm.ROUTES]
SHOWN = 12  # violations listed in a failure message


def _built(name: str, route: str) -> lm.LetterModel:
    try:
        return lm.build(name, route)
    except lm.RouteUnsupported as e:
        pytest.skip(str(e))


_results: dict[tuple[str, str], InferenceResult] = {}


def _infer(name: str, route: str) -> tuple[lm.LetterModel, InferenceResult]:
    m = _built(name, route)
    key = (name, route)
    if key not in _results:
        _results[key] = infer_layouts(m.mod)
    return m, _results[key]


def _report(kind: str, found: list[str]) -> str:
    more = f"\n  ... and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    return f"{len(found)} {kind} violations:\n  " + "\n  ".join(found[:SHOWN]) + more


# --------------------------------------------------------------------------- every binding


@pytest.mark.parametrize(("name", "route"), COMBOS)
def test_op_semantics_hold_on_every_binding(name: str, route: str) -> None:
    _, r = _infer(name, route)
    found = lp.property_violations(r)
    assert not found, _report("property", found)


@pytest.mark.parametrize(("name", "route"), COMBOS)
def test_only_self_broadcast_conflicts(name: str, route: str) -> None:
    # letters minted apart that meet (Swin's heads, reached forward from the qkv reshape
    # and backward from the shortcut add) would be a disagreement the layouts keep; only
    # an axis broadcast against itself may remain
    _, r = _infer(name, route)
    found = lp.other_conflicts(r)
    assert not found, _report("conflict", found)


@pytest.mark.parametrize(("name", "route"), COMBOS)
def test_every_weight_carries_its_role(name: str, route: str) -> None:
    m, r = _infer(name, route)
    found = lp.role_violations(r, m.num_input)
    assert not found, _report("role", found)


@pytest.mark.parametrize("name", list(lm.MODELS))
def test_four_imports_agree_on_weight_layouts(name: str) -> None:
    # conv, matmul and norm weights, matched by role and shape in op order; biases take
    # activation letters, which the importers may legitimately name differently
    per_route: dict[str, dict[tuple[str, tuple[object, ...]], list[str | None]]] = {}
    for route in lm.ROUTES:
        try:
            m = lm.build(name, route)
        except lm.RouteUnsupported:
            continue
        _, r = _infer(name, route)
        uses: dict[tuple[str, tuple[object, ...]], list[str | None]] = defaultdict(list)
        for u in lp.weight_uses(r, m.num_input):
            if u.role != "bias":
                uses[(u.role, u.shape)].append(u.at_op)
        per_route[route] = uses
    assert len(per_route) >= 2, "fewer than two import routes work"
    common = set.intersection(*(set(u) for u in per_route.values()))
    differ = []
    for key in sorted(common, key=str):
        got = {route: uses[key] for route, uses in per_route.items()}
        # an importer that fuses or splits ops has a different count: compare the rest
        if len({len(v) for v in got.values()}) == 1 and len({str(v) for v in got.values()}) > 1:
            differ.append(f"{key}: {got}")
    assert not differ, "\n".join(differ)


def test_the_models_exercise_the_checks() -> None:
    # guards the checker against passing vacuously: the roles it checks are found
    m, r = _infer("resnet", "ep")
    roles = {u.role for u in lp.weight_uses(r, m.num_input)}
    assert roles == {"conv", "matmul", "norm", "bias"}
    m, r = _infer("mlp", "ep_params")
    assert [u.role for u in lp.weight_uses(r, m.num_input)] == ["matmul", "bias"] * 2


# --------------------------------------------------------------------------- the checker


def _module(body: str, params: str) -> tvm.IRModule:
    src = (
        "# from tvm.script import ir as I\n"
        "# from tvm.script import relax as R\n"
        "@I.ir_module\n"
        "class Module:\n"
        "    @R.function\n"
        f"    def main({params}):\n"
        "        with R.dataflow():\n"
        + "".join(f"            {line}\n" for line in body.strip().splitlines())
        + "            R.output(y)\n"
        "        return y\n"
    )
    return tvm.script.from_source(src)


def test_checker_finds_a_broken_broadcast_tie() -> None:
    mod = _module("y = R.add(x, b)", 'x: R.Tensor((2, 8), "float32"), '
                                     'b: R.Tensor((8,), "float32")')
    r = infer_layouts(mod)
    assert lp.property_violations(r) == []
    bias = r.view.sites[0].args[1]
    assert isinstance(bias, int)
    r.layouts[bias] = "Z"  # what a chain-local letter would look like
    found = lp.property_violations(r)
    assert len(found) == 1 and found[0].startswith("broadcast: main:y (relax.add)"), found
    assert lp.role_violations(r, num_input=1)[0].startswith("bias: main:y"), r.layouts


def test_checker_exempts_only_self_broadcast_conflicts() -> None:
    mod = _module("y = R.less_equal(a, b)", 'a: R.Tensor((8, 1), "int64"), '
                                            'b: R.Tensor((1, 8), "int64")')
    r = infer_layouts(mod)
    r.layouts[r.view.sites[0].args[1]] = "XY"  # type: ignore[index]
    assert any(v.startswith("broadcast:") for v in lp.property_violations(r))
    r.conflicts.append(_conflict(r, "axis 0 is broadcast against itself"))
    assert lp.self_broadcast_sites(r) == {0}
    assert not any(v.startswith("broadcast:") for v in lp.property_violations(r))


def _conflict(r: InferenceResult, message: str) -> object:
    from msc_rules.engine import Conflict

    site = r.view.sites[0]
    eq = r.rules.lookup(site.op).equations[0]  # type: ignore[union-attr]
    return Conflict(site.out, "disagree", "AA", None, 0, eq, message)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- targeted cases

SCALAR_ADD = ("y = R.add(x, R.const(1.0, \"float32\"))",
              'x: R.Tensor((2, 3, 4, 5), "float32")')


def test_scalar_add_claims_no_semantics() -> None:
    r = infer_layouts(_module(*SCALAR_ADD))
    x = r.view.values[0].struct
    y = r.view.sites[0].out
    assert isinstance(x, int) and isinstance(y, int)
    # nothing says it is an image: the input keeps initial letters, the output follows
    assert r.layouts[x] == L.initial(4), r.layouts
    assert r.layouts[y] == r.layouts[x], r.layouts


@pytest.mark.parametrize("route", lm.ROUTES)
def test_embedding_output_is_indices_plus_a_new_letter(route: str) -> None:
    _, r = _infer("embedding", route)
    view = r.view
    ids = table = out = None
    for v in view.values:
        if not isinstance(v.struct, int):
            continue
        shape = view.shape(v.struct)
        if v.kind == "param" and shape == [4, 5]:
            ids = v.struct
        elif v.kind in ("param", "const") and shape == [10, 3]:
            table = v.struct
        elif v.kind == "binding" and shape == [4, 5, 3]:
            out = v.struct
    assert ids is not None and table is not None and out is not None
    li, lt, lo = r.layouts[ids], r.layouts[table], r.layouts[out]
    assert li and lt and lo, (li, lt, lo)
    assert lo[:2] == li and lo[2] not in li, f"indices {li}, output {lo}"
    assert not set(lt) & set(li), f"table {lt} shares a letter with the indices {li}"
    assert lt[1] == lo[2], f"table {lt}, output {lo}: the embedding axis is the table's"


def _scatter(x: tuple[int, ...], src: tuple[int, ...]) -> InferenceResult:
    torch.manual_seed(0)
    inputs = (torch.randn(x), torch.rand(x) > 0.5, torch.randn(src))
    return infer_layouts(lm.fx_import(lm.MaskedScatter(), inputs))


def test_masked_scatter_source_keeps_its_own_letters() -> None:
    r = _scatter((2, 5), (3, 5))
    x, _, src = (r.view.values[i].struct for i in range(3))
    assert isinstance(x, int) and isinstance(src, int)
    lx, ls = r.layouts[x], r.layouts[src]
    assert lx and ls, (lx, ls)
    # letters chosen apart never merge: a source letter the input also has can only name
    # the same axis of the same extent (the source's 3 rows are not the input's 2 rows,
    # nor are its 5 columns the input's rows)
    sx, ss = r.view.shape(x), r.view.shape(src)
    assert sx is not None and ss is not None
    for j, letter in enumerate(ls):
        k = lx.find(letter)
        assert k < 0 or (k == j and sx[k] == ss[j]), (
            f"source {ls} {ss} axis {j} shares {letter!r} with the input {lx} {sx}")
    out = r.view.sites[-1].out
    assert isinstance(out, int) and r.layouts[out] == lx, (lx, r.layouts[out])


def test_one_dimensional_chain_claims_no_semantics() -> None:
    r = _scatter((6,), (6,))
    claimed = {r.leaf_place(i): lay for i, lay in enumerate(r.layouts)
               if lay and set(lay) & set("NCHWD")}
    assert not claimed, f"no conv, pool, norm or layout attribute, yet: {claimed}"


def _cli(*args: str | Path) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in args])
    assert rc == 0, err.getvalue() + out.getvalue()
    return out.getvalue()


def _annotate_rows(text: str) -> dict[str, tuple[str, str]]:
    """name -> (shape, layout) from `msc-rules annotate`'s table."""
    rows: dict[str, tuple[str, str]] = {}
    for line in text.splitlines()[2:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 4:
            rows[cells[0]] = (cells[2], cells[3])
    return rows


def test_annotate_cnn_ties_biases_and_gives_linear_weights_roles() -> None:
    rows = _annotate_rows(_cli("annotate", "cnn"))
    assert rows["matmul.weight"][1] == "OI", rows["matmul.weight"]
    assert rows["matmul.weight.permute_dims"][1] == "IO", rows["matmul.weight.permute_dims"]
    # rank-1 operands of an add: the conv biases (reshaped to [1,C,1,1]) and the linear's
    biases = [n for n in rows if n.endswith((".lhs", ".rhs"))
              and re.fullmatch(r"\[\d+\] \w+", rows[n][0])]
    assert len(biases) >= 4, sorted(rows)  # three conv biases and the linear's
    for bias in biases:
        add = bias.rsplit(".", 1)[0]
        out = rows[add][1]
        reshaped = rows.get(f"{bias}.reshape")
        channel = out[1] if reshaped else out[-1]
        assert rows[bias][1] == channel, (bias, rows[bias], add, out)
        if reshaped:
            assert len(out) == 4, (add, out)
            lay = reshaped[1]
            assert lay[1] == channel and len(set(lay)) == 4, (bias, reshaped, out)


def test_explain_initial_letters_lists_the_rules_considered(tmp_path: Path) -> None:
    body, params = SCALAR_ADD
    path = tmp_path / "scalar_add.py"
    path.write_text(_module(body, params).script())
    text = _cli("explain", path, "x")
    # the first step is x's own decision (later steps explain neighbours it read)
    step = text.split("\n#2 ")[0].split("conflicts touching")[0]
    assert re.search(rf"#1 x = {L.initial(4)}\b", step), text
    assert "no rule reached it" not in step, text
    # the add's rule reached x (its weak defaults could not decide it): it is named
    assert "relax.add" in step or "binary" in step, text
