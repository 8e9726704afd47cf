"""The msc-rules command: each command in a subprocess (`python -m msc_rules ...`) on the
bundled examples and on models the tests save, with outputs checked for content.

The HTML graph is rendered in headless Chromium (Debian's `chromium` package); that one
test is skipped when no chromium binary is on PATH.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import pytest
import tvm
from chromium import find_chromium
from tvm import relax

import msc_rules
from msc_rules import cli
from msc_rules.dsl.ruleset import load_rules
from msc_rules.models import bundled_examples, load_model

REPO = Path(__file__).resolve().parents[1]

# A user rule file that contradicts the library: relu's output is forced to NHWC while
# the convolution and pooling around it say NCHW, so the cnn gets conflicts.
BAD_RULES = """\
override op relax.nn.relu(data) {
    out = "NHWC"
}
"""

PLUGIN_RULES = """\
# a call_dps_packed plugin: elementwise on data, bias is per channel
plugin my_fused_gelu(data, bias) {
    out  = data
    data = out
    bias ?= "O"
}
"""

# TVMScript as `mod.script()` prints it: a plugin call, a relu and a call to a helper.
PLUGIN_MODEL = """\
@I.ir_module
class Module:
    @R.function
    def helper(a: R.Tensor((1, 8, 4, 4), "float32")) -> R.Tensor((1, 8, 4, 4), "float32"):
        with R.dataflow():
            c = R.nn.relu(a)
            R.output(c)
        return c

    @R.function
    def main(x: R.Tensor((1, 8, 4, 4), "float32"), b: R.Tensor((8,), "float32")):
        cls = Module
        with R.dataflow():
            y = R.call_dps_packed("my_fused_gelu", (x, b),
                                  out_ty=R.Tensor((1, 8, 4, 4), "float32"))
            z = R.nn.relu(y)
            R.output(z)
        w = cls.helper(z)
        return w
"""


def run(*args: str | Path, cwd: Path | None = None, extra_path: Path | None = None,
        check: bool | None = True) -> subprocess.CompletedProcess[str]:
    """`python -m msc_rules ARGS` in a subprocess; `check` asserts exit 0 (False: non-zero)."""
    env = dict(os.environ)
    paths = [str(REPO)] + ([str(extra_path)] if extra_path else [])
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("MSC_RULES_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "msc_rules", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)
    if check is True:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    elif check is False:
        assert proc.returncode != 0, proc.stdout
        assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def call(*args: str | Path, cwd: Path | None = None) -> tuple[int, str, str]:
    """`msc_rules.cli.main(ARGS)` in this process: (exit status, stdout, stderr).

    Most checks run in-process (a subprocess costs seconds of TVM import); every
    command also runs at least once through `run` as `python -m msc_rules`.
    """
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main([str(a) for a in args])
    finally:
        os.chdir(old)
    assert "Traceback" not in err.getvalue()
    return rc, out.getvalue(), err.getvalue()


def ok(*args: str | Path, cwd: Path | None = None) -> str:
    """stdout of an in-process run that must succeed."""
    rc, out, err = call(*args, cwd=cwd)
    assert rc == 0, err + out
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    (d / "bad.rules").write_text(BAD_RULES)
    (d / "gelu.rules").write_text(PLUGIN_RULES)
    (d / "plugin_model.py").write_text(PLUGIN_MODEL)
    return d


class _Net:
    """A small torch CNN: conv-bn-relu, a residual block, pooling and a linear head."""

    @staticmethod
    def build():  # type: ignore[no-untyped-def]
        import torch

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
                self.bn = torch.nn.BatchNorm2d(8)
                self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
                self.fc = torch.nn.Linear(8, 4)

            def forward(self, x):  # type: ignore[no-untyped-def]
                y = torch.relu(self.bn(self.conv(x)))
                y = torch.relu(y + self.conv2(y))
                return self.fc(y.mean(dim=(2, 3)))

        torch.manual_seed(0)
        return Net().eval(), torch.randn(2, 3, 8, 8)


@pytest.fixture(scope="module")
def torch_model(work: Path) -> dict[str, Path]:
    """A torch model exported by the test: as IRModule JSON and as a .pt2 ExportedProgram."""
    import warnings

    import torch
    from tvm.relax.frontend.torch import from_exported_program

    model, x = _Net.build()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        ep = torch.export.export(model, (x,))
        mod = from_exported_program(ep)
        torch.export.save(ep, str(work / "net.pt2"))
    (work / "net.json").write_text(tvm.ir.save_json(mod))
    return {"json": work / "net.json", "pt2": work / "net.pt2"}


def _call_ops(mod: tvm.IRModule) -> Counter[str]:
    counts: Counter[str] = Counter()
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op):
                counts[str(b.value.op.name)] += 1
    return counts


# --------------------------------------------------------------------------- annotate


def test_annotate_default_bundled_example_writes_loadable_json(work: Path) -> None:
    out = work / "cnn_annotated.json"
    proc = run("annotate", "-o", out, cwd=work)
    assert "bundled example 'cnn'" in proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    by_name = {r[0]: r for r in rows if r}
    assert by_name["x"][1] == "param" and by_name["x"][-1] == "NCHW"
    assert by_name["conv2d"][1] == "relax.nn.conv2d" and by_name["conv2d"][-1] == "NCHW"
    assert by_name["conv2d.weight"][1] == "const" and by_name["conv2d.weight"][-1] == "OIHW"
    # one row per tensor: the fields of batch_norm's tuple, not the tuple
    assert "batch_norm" not in by_name
    assert [by_name[f"batch_norm.{i}"][-1] for i in range(3)] == ["NCHW", "O", "O"]
    assert re.search(r"^\d+ tensors, \d+ with a layout \(\d+ scalars\), \d+ without, "
                     r"\d+ guessed, \d+ guessed weights$", proc.stdout, re.M)
    # the written module carries the markers the table shows
    mod = tvm.ir.load_json(out.read_text())
    names, layouts = [], {}
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            if isinstance(b.value, relax.Call):
                names.append(msc_rules.get_name(b.value))
                layouts[msc_rules.get_name(b.value)] = msc_rules.get_layout(b.value)
    assert "conv2d" in names and "relu" in names
    assert layouts["conv2d"] == "NCHW" and layouts["relu"] == "NCHW"
    assert len(set(names)) == len(names)


def test_annotate_json_format_on_transformer() -> None:
    data = json.loads(ok("annotate", "transformer", "--format", "json"))
    assert data["kind"] == "tensors" and data["entry"] == "main"
    rows = data["tensors"]
    mod = load_model("transformer")
    # one row per tensor: split's three fields are three rows of op relax.split
    calls = _call_ops(mod)
    calls["relax.split"] = 3 * calls["relax.split"]
    assert Counter(r["op"] for r in rows if r["op"].startswith("relax.")) == calls
    t = data["totals"]
    assert t["tensors"] == len(rows) and t["with_layout"] + t["without_layout"] == len(rows)
    assert t["guessed"] == sum(r["guessed"] for r in rows) == sum(data["guessed_by_op"].values())
    norms = [r for r in rows if r["op"] == "relax.nn.layer_norm"]
    assert norms and all(len(r["layout"]) == 3 for r in norms)
    assert all(r["layout"] for r in rows if r["op"] == "relax.matmul")
    ids = next(r for r in rows if r["name"] == "ids")
    assert ids["op"] == "param" and ids["shape"].endswith("int64") and len(ids["layout"]) == 2


def test_annotate_torch_models_saved_by_the_test(torch_model: dict[str, Path]) -> None:
    md = run("annotate", torch_model["json"], "--format", "markdown").stdout
    assert md.startswith("| name | op | shape | layout | guessed |")
    assert "| conv2d | relax.nn.conv2d | [2, 8, 8, 8] float32 | NCHW |   |" in md
    assert "| conv2d.weight | const | [8, 3, 3, 3] float32 | OIHW |   |" in md
    assert re.search(r"^\| mean \| relax\.mean \| \[2, 8\] float32 \| NC \|   \|$", md, re.M)
    # the same model from the .pt2 file gives the same table
    assert ok("annotate", torch_model["pt2"]) == ok("annotate", torch_model["json"])


def test_annotate_tvmscript_with_entry_and_plugin_rules(work: Path) -> None:
    model = work / "plugin_model.py"
    out = ok("annotate", model, "--rules", work / "gelu.rules")
    rows = {r.split()[0]: r.split() for r in out.splitlines()[2:] if r.strip() and
            not r[0].isdigit()}
    assert rows["my_fused_gelu"][1] == "plugin:my_fused_gelu"
    assert rows["b"][-1] == "O"  # the plugin rule's weak default for its bias
    helper = ok("annotate", model, "--entry", "helper")
    assert "relu" in helper and "my_fused_gelu" not in helper and "2 tensors" in helper


def test_annotate_strict_reports_bindings_without_rules(work: Path) -> None:
    rc, _, err = call("annotate", work / "plugin_model.py", "--strict")
    assert rc == 1
    assert "no rule for plugin:my_fused_gelu" in err
    assert len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- coverage


def test_coverage_without_model_lists_every_registered_op() -> None:
    data = json.loads(run("coverage", "--format", "json").stdout)
    registered = sorted(n for n in tvm.ir.Op.list_op_names() if n.startswith("relax."))
    assert len(registered) == 230
    ops = {o["op"]: o for o in data["ops"]}
    assert sorted(ops) == registered
    rules = load_rules()
    t = data["totals"]
    assert t["ops"] == 230 and t["ruled"] + t["ignored"] + t["undecided"] == 230
    assert t["ruled"] == sum(1 for op in registered if rules.status(op) == "ruled")
    assert data["percent"] == pytest.approx(100 * (t["ruled"] + t["ignored"]) / 230, abs=0.01)
    builtin = {op for op in registered
               if tvm.ir.Op.get(op).get_attr("FRelaxInferLayout") is not None}
    assert {op for op, o in ops.items() if o["tvm_infer_layout"]} == builtin
    assert t["tvm_infer_layout"] == len(builtin)
    conv = ops["relax.nn.conv2d"]
    rule = rules.lookup("relax.nn.conv2d")
    assert rule is not None
    assert conv["status"] == "ruled" and conv["tvm_infer_layout"]
    assert re.search(r"nn\.rules:\d+:\d+$", conv["where"])
    assert (conv["forward"], conv["backward"]) == (len(rule.forward), len(rule.backward))
    for op, o in ops.items():
        if o["status"] == "ignored":
            assert o["reason"], op
        if o["status"] == "undecided":
            assert o["where"] == "" and rules.lookup(op) is None


def test_coverage_library_text_and_markdown() -> None:
    text = ok("coverage")
    assert re.search(r"^230 ops: \d+ ruled, \d+ ignored, \d+ undecided; decided [\d.]+%$",
                     text, re.M)
    assert re.search(r"^relax\.nn\.conv2d\s+ruled\s+\S*nn\.rules:\d+:\d+ family conv\s+\d+\s+\d+"
                     r"\s+yes$", text, re.M)
    md = ok("coverage", "--format", "markdown", "--fail-under", "0")
    assert "| op | status | rule / reason | fwd | bwd | tvm layout |" in md
    assert md.count("\n| relax.") == 230


def test_coverage_of_a_model_counts_bindings_per_op() -> None:
    data = json.loads(ok("coverage", "transformer", "--format", "json"))
    assert data["kind"] == "model-coverage"
    used = {o["op"]: o for o in data["ops"]}
    expected = _call_ops(load_model("transformer"))
    assert {op: o["bindings"] for op, o in used.items()} == dict(expected)
    assert used["relax.matmul"]["status"] == "ruled"
    assert data["totals"]["bindings"] == sum(expected.values())
    for op, n in data["unruled"].items():
        assert used[op]["status"] == "undecided" and used[op]["bindings"] == n
    for t in data["guessed"]:
        assert t["layout"] and t["place"].startswith("main:")


def test_coverage_fail_under_and_plugin_rules(work: Path) -> None:
    model = work / "plugin_model.py"
    proc = run("coverage", model, "--fail-under", "100", check=False)
    assert proc.returncode == 1
    assert "plugin:my_fused_gelu  1         unruled plugin" in proc.stdout
    assert "ops without rules: plugin:my_fused_gelu (1 binding)" in proc.stdout
    assert "under --fail-under 100%" in proc.stderr
    md = ok("coverage", model, "--rules", work / "gelu.rules", "--fail-under", "100",
            "--format", "markdown")
    assert re.search(r"^\| plugin:my_fused_gelu \| 1 \| plugin \| \S*gelu\.rules:2:1 \| .* \|$",
                     md, re.M)
    assert "3 call bindings, 3 with a rule or ignore (100.0%)" in md


def test_coverage_reports_conflicts(work: Path) -> None:
    data = json.loads(ok("coverage", "cnn", "--rules", work / "bad.rules", "--format", "json"))
    conflicts = data["conflicts"]
    assert data["totals"]["conflicts"] == len(conflicts) > 0
    relu = [c for c in conflicts if c["tensor"] == "relu"]
    assert relu and relu[0]["kind"] == "disagree"
    assert relu[0]["existing"] == "NHWC" and relu[0]["proposed"] == "NCHW"
    assert "bad.rules:2:5" in relu[0]["existing_by"]


# --------------------------------------------------------------------------- explain


def test_explain_chain_reaches_a_root() -> None:
    data = json.loads(run("explain", "cnn", "add_2", "--format", "json").stdout)
    assert data["tensor"] == "add_2" and data["layout"] == "NCHW"
    steps = data["steps"]
    # the first step is the engine's own decision for that tensor
    mod = msc_rules.annotate(load_model("cnn"))
    res = msc_rules.infer_layouts(mod)
    leaf = next(v.struct for v in res.view.values
                if v.kind == "binding" and msc_rules.get_name(v.value) == "add_2")
    assert isinstance(leaf, int)
    d = res.decisions[leaf]
    assert d is not None and d.equation is not None
    first = steps[0]
    assert first["tensor"] == "add_2" and first["layout"] == d.layout == "NCHW"
    assert first["equation"] == " ".join(d.equation.text.split())
    pos = d.equation.pos
    assert first["position"].endswith(f"{Path(pos.file).name}:{pos.line}:{pos.col}")
    assert first["site"] == msc_rules.get_name(res.view.sites[d.site].call)
    # an add has no layout attributes: it read its operands; each step names the step
    # explaining the neighbour it followed, down to a decision that reads nothing
    assert len(steps) >= 2 and first["reads"]
    index = {s["index"]: s for s in steps}
    for s in steps[:-1]:
        followed = [r for r in s["reads"] if r["step"] in index]
        assert followed, s
        assert all(index[r["step"]]["tensor"] == r["tensor"] for r in followed)
    assert not steps[-1]["reads"] and steps[-1]["note"]
    text = ok("explain", "cnn", "add_2")
    assert text.startswith("tensor add_2 [main:")
    assert f"#1 add_2 = NCHW  [{d.kind}]" in text
    assert "conflicts touching add_2: none" in text


def test_explain_by_variable_name_and_tuple_field() -> None:
    text = ok("explain", "transformer", "lv40", "--tree")
    assert re.match(r"tensor \S+ \[main:lv40\]: layout [A-Z]+$", text.splitlines()[0])
    assert "[fallback]" in text or "reads no other tensor" in text
    bn = ok("explain", "cnn", "batch_norm.1", "--format", "markdown")
    assert bn.startswith("# tensor batch_norm.1 [main:")
    assert "layout O" in bn.splitlines()[0]
    assert "nn.rules" in bn


def test_explain_lists_conflicts_touching_the_tensor(work: Path) -> None:
    text = ok("explain", "cnn", "relu", "--rules", work / "bad.rules")
    assert re.search(r"#1 relu = NHWC  \[rule\]", text)
    assert 'out = "NHWC"' in text and "bad.rules:2:5" in text
    m = re.search(r"conflicts touching relu: (\d+)", text)
    assert m and int(m.group(1)) >= 1
    assert "'NCHW' disagrees with 'NHWC'" in text


def test_explain_unknown_tensor_is_one_clear_error() -> None:
    rc, out, err = call("explain", "cnn", "relux")
    assert rc == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "no tensor named 'relux'" in err
    assert "did you mean" in err and "relu" in err


# --------------------------------------------------------------------------- graph


_PROBE = """<script>
var box = document.getElementById('search');
box.value = 'softmax';
box.dispatchEvent(new Event('input'));
var probe = document.createElement('div');
probe.id = 'probe';
probe.textContent = document.querySelector('#details pre').textContent.split('\\n')[0] + '|' +
  document.querySelectorAll('g.node.hit').length + '|' +
  document.querySelectorAll('g.node.dim').length;
document.body.appendChild(probe);
</script>"""


@pytest.mark.skipif(find_chromium() is None,
                    reason="headless Chromium not installed (apt-get install chromium)")
def test_graph_html_renders_in_headless_chromium(work: Path) -> None:
    page = work / "transformer.html"
    proc = run("graph", "transformer", "-o", page)
    assert "wrote html graph" in proc.stderr
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html and "<script src" not in html and "<link" not in html
    names = set(re.findall(r'<g class="node[^"]*" id="n\d+" data-name="([^"]+)"', html))
    assert {"ids", "layer_norm", "matmul", "softmax"} <= names
    chrome = find_chromium()
    assert chrome
    # a copy of the page with a probe appended: it types in the search box and records
    # what the page's own script then shows
    probe = page.with_name("probe.html")
    probe.write_text(html.replace("</body>", _PROBE + "</body>"))
    dom = subprocess.run(
        [chrome, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={work / 'chrome-profile'}", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120).stdout
    rendered = set(re.findall(r'<g class="node[^"]*" id="n\d+" data-name="([^"]+)"', dom))
    assert rendered == names
    # the page's script ran: it fills the status line with counts from the DOM
    status = re.search(r'<span id="status">([^<]*)</span>', dom)
    count = len(re.findall(r'<g class="node[ "]', html))
    assert status and re.fullmatch(rf"{count} tensors, \d+ edges, 0 with conflicts",
                                   status.group(1))
    # searching selects the one softmax, shows its details and dims the rest
    found = re.search(r'<div id="probe">([^<]*)</div>', dom)
    assert found, dom[-2000:]
    first_line, hits, dimmed = found.group(1).split("|")
    assert first_line == "softmax" and hits == "1" and int(dimmed) == count - 1


def test_graph_svg_and_dot_with_conflicts(work: Path) -> None:
    svg = work / "cnn.svg"
    dot = work / "cnn.dot"
    ok("graph", "cnn", "-o", svg, "--rules", work / "bad.rules")
    ok("graph", "cnn", "-o", dot, "--rules", work / "bad.rules", "--no-consts")
    root = ElementTree.parse(svg).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    nodes = [g for g in root.iter(f"{ns}g") if "node" in g.get("class", "").split()]
    by_name = {g.get("data-name"): g for g in nodes}
    assert by_name["conv2d"].get("data-layout") == "NCHW"
    assert by_name["conv2d.weight"].get("data-layout") == "OIHW"
    assert "conflict" in by_name["relu"].get("class", "")
    assert by_name["relu"].get("data-layout") == "NHWC"
    assert "conflict" not in by_name["conv2d"].get("class", "")
    # one fill colour per layout
    fills: dict[str, set[str]] = {}
    for g in nodes:
        rect = g.find(f"{ns}rect")
        assert rect is not None
        fills.setdefault(g.get("data-layout") or "", set()).add(rect.get("fill") or "")
    assert all(len(f) == 1 for f in fills.values())
    assert len({next(iter(f)) for lay, f in fills.items() if lay}) == len(
        [lay for lay in fills if lay])
    text = dot.read_text()
    assert text.startswith('digraph "cnn (main)" {')
    assert re.search(r'label="relu\\nNHWC · relu".*color="#d00000", penwidth=3', text)
    assert "conv2d.weight" not in text  # --no-consts
    assert len(re.findall(r"^  n\d+ -> n\d+;$", text, re.M)) > 10


def test_graph_needs_a_known_suffix(work: Path) -> None:
    rc, _, err = call("graph", "cnn", "-o", work / "cnn.png")
    assert rc == 1 and "use a .html, .svg or .dot file" in err


# --------------------------------------------------------------------------- check


def test_check_library_and_files(work: Path) -> None:
    # the library's own examples are the rule tests' business: here, the summary adds up
    rc, lib, _ = call("check")
    assert rc == 0, lib
    m = re.search(r"^the rule library: no errors; examples: (\d+) passed$", lib, re.M)
    assert m and int(m.group(1)) == len(load_rules().examples)
    assert ": error: " not in lib
    out = ok("check", work / "gelu.rules")
    assert f"{work / 'gelu.rules'}: adds plugin my_fused_gelu" in out
    assert "1 rule file(s): no errors; examples: 0 passed" in out


def test_check_reports_position_line_and_caret(work: Path) -> None:
    bad = work / "broken.rules"
    bad.write_text("# a broken rule\nop relax.my_op(data) {\n    out = data +\n}\n")
    proc = run("check", bad, check=False)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1
    assert re.match(rf"{re.escape(str(bad))}:3:17: error: ", lines[0])
    assert lines[1] == "        out = data +"
    assert lines[2] == " " * 20 + "^"
    dup = work / "dup.rules"
    dup.write_text("op relax.nn.relu(data) {\n    out = data\n}\n")
    rc, out, _ = call("check", dup)
    assert rc == 1
    assert f"{dup}:1:4: error: op 'relax.nn.relu' is already defined" in out
    assert "write 'override op relax.nn.relu(...)' to redefine it" in out
    dup.write_text(PLUGIN_RULES + PLUGIN_RULES.replace("\nplugin ", "\noverride plugin ", 1)
                   + PLUGIN_RULES)
    rc, out, _ = call("check", dup)
    assert rc == 1 and out.count(": error: ") == 1
    assert "plugin 'my_fused_gelu' is already defined at" in out
    assert "write 'override plugin my_fused_gelu(...)' to redefine it" in out


def test_check_runs_example_lines(work: Path) -> None:
    rules = work / "examples.rules"
    rules.write_text(textwrap.dedent("""\
        override op relax.nn.relu(data) {
            out  = data
            data = out
        }
        example relax.nn.relu(T[1,3,4,4] "NCHW") -> out = "NCHW"
        example relax.nn.relu(T[1,3,4,4] "NCHW") -> out = "NHWC"
        """))
    rc, out, _ = call("check", rules)
    assert rc == 1
    assert f"{rules}:6:1: error: example failed: out is 'NCHW', expected 'NHWC'" in out
    assert "    example relax.nn.relu(T[1,3,4,4] \"NCHW\") -> out = \"NHWC\"\n    ^" in out
    assert out.rstrip().endswith("1 error(s) in 1 rule file(s): 1 example(s) failed, 1 passed")
    assert "no errors" not in out
    assert call("check", rules, "--no-examples")[0] == 0


def test_check_reports_a_tuple_field_of_a_tensor_met_by_an_example(work: Path) -> None:
    rules = work / "field_trap.rules"
    rules.write_text(textwrap.dedent("""\
        override op relax.nn.relu(data) {
            out  = data
            data = out[0]
        }
        example relax.nn.relu(T[2,3]) given out = "NC" -> data = "NC"
        example relax.nn.relu(T[2,3] "NC") -> out = "NC"
        override op relax.nn.gelu(data) { out = data }
        example relax.nn.gelu(T[2,3] "NC") -> out = "NC"
        """))
    rc, out, _ = call("check", rules)
    assert rc == 1
    assert out.count(": error: ") == 1  # one mistake, met by two examples
    assert (f"{rules}:3:12: error: 'out' is a tensor here, not a tuple: 'out[0]' reads tuple "
            "field 0 and never decides anything; for the letter of axis 0 write "
            "letters(out, 0, 1)\n        data = out[0]\n               ^") in out
    assert out.rstrip().endswith("1 error(s) in 1 rule file(s): 2 example(s) failed, 1 passed")


def test_docs_rule_files_pass_check(work: Path) -> None:
    doc = (REPO / "docs" / "extending.md").read_text()
    files = []
    for block in re.findall(r"```rules\n(.*?)```", doc, re.S):
        name = re.match(r"# file: (\S+)", block)
        assert name, block
        path = work / name.group(1)
        path.write_text(block)
        files.append(path)
    assert len(files) >= 2
    out = ok("check", *files)
    assert "no errors; examples: 1 passed" in out
    assert "overrides plugin my_scale" in out


# The README's plugin example on NCHW data: a convolution, then the plugin.
README_PLUGIN_MODEL = """\
from tvm.script import ir as I, relax as R


@I.ir_module
class Module:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((8, 3, 3, 3), "float32"),
             b: R.Tensor((8,), "float32")):
        with R.dataflow():
            y = R.nn.conv2d(x, w, padding=1)
            z = R.call_dps_packed("my_fused_bias_relu", (y, b),
                                  out_ty=R.Tensor((1, 8, 8, 8), "float32"))
            R.output(z)
        return z
"""


def test_readme_plugin_example_gives_the_bias_the_channel_letter(work: Path) -> None:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```\n(# my_ops\.rules\n.*?)```", readme, re.S)
    assert block, "the README's my_ops.rules example"
    rules = work / "my_ops.rules"
    rules.write_text(block.group(1))
    model = work / "readme_plugin.py"
    model.write_text(README_PLUGIN_MODEL)
    out = ok("check", rules)
    assert "adds plugin my_fused_bias_relu; overrides op relax.nn.relu" in out
    assert "no errors; examples: 1 passed" in out
    data = json.loads(ok("annotate", model, "--rules", rules, "--format", "json"))
    layout = {t["var"]: t["layout"] for t in data["tensors"] if t["var"]}
    assert layout["y"] == layout["z"] == "NCHW"
    assert layout["b"] == "C"


def test_check_warns_about_unregistered_ops_and_has_no_entry_option(work: Path) -> None:
    typo = work / "typo.rules"
    typo.write_text("op relax.nn.rleu(data) {\n    out = data\n}\n")
    rc, out, _ = call("check", typo)
    assert rc == 0  # a warning, not an error
    assert f"{typo}: adds op relax.nn.rleu" in out
    assert (f"{typo}:1:4: warning: op 'relax.nn.rleu' is not registered with TVM "
            "(did you mean 'relax.nn.relu'") in out
    assert "    op relax.nn.rleu(data) {\n       ^" in out
    rc, _, err = call("check", typo, "--entry", "main")
    assert rc == 2 and "unrecognized arguments: --entry" in err


# --------------------------------------------------------------------------- errors, plumbing


@pytest.mark.parametrize("args, message", [
    (["annotate", "missing.json"], "model file 'missing.json' not found (bundled examples: "),
    (["annotate", "cnn", "--entry", "nope"], "entry function 'nope' is not a Relax function"),
    (["coverage", "--rules", "no_such.rules"], "no_such.rules:1:1: error: rule file not found"),
    (["annotate", "bad.rules"], "cannot tell the format of 'bad.rules'"),
    (["annotate", "garbage.json"], "'garbage.json' is not an IRModule saved with"),
    (["explain", "plugin_model.py", "relu_1"], "tensor name 'relu_1' is ambiguous"),
])
def test_errors_are_one_clear_line(work: Path, args: list[str], message: str) -> None:
    (work / "garbage.json").write_text("{ not json")
    rc, out, err = call(*args, cwd=work)
    assert rc == 1 and out == ""
    assert message in err
    assert err.startswith("msc-rules: error: ")


def test_errors_in_a_subprocess_have_no_traceback(work: Path) -> None:
    proc = run("graph", "missing.onnx", "-o", "x.html", cwd=work, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("msc-rules: error: model file 'missing.onnx' not found")
    proc = run("explain", "cnn", check=False)  # usage error: argparse's message, status 2
    assert proc.returncode == 2 and "the following arguments are required" in proc.stderr


def test_main_in_process_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["coverage", "--fail-under", "0", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["ops"] == 230
    assert cli.main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert cli.main(["coverage", "--fail-under", "120"]) == 2


def test_bundled_examples_are_small_and_loadable() -> None:
    examples = bundled_examples()
    assert set(examples) >= {"cnn", "transformer"}
    for name, path in examples.items():
        assert path.stat().st_size < 1_000_000, name
        mod = tvm.ir.load_json(path.read_text())
        assert isinstance(mod, tvm.IRModule) and isinstance(mod["main"], relax.Function)
    assert "relax.nn.conv2d" in _call_ops(load_model("cnn"))
    assert "relax.nn.layer_norm" in _call_ops(load_model("transformer"))


# --------------------------------------------------------------------------- entry points


def _fake_distribution(root: Path) -> Path:
    """A distribution on `root` (no install) whose `msc_rules.rules` entry point ships a
    rule directory with a plugin rule."""
    pkg = root / "fake_kernels_pkg"
    (pkg / "rules").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "from pathlib import Path\n\n\ndef rule_files():\n"
        "    return Path(__file__).parent / 'rules'\n")
    (pkg / "rules" / "kernels.rules").write_text(PLUGIN_RULES)
    info = root / "fake_kernels-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-kernels\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[msc_rules.rules]\nfake_kernels = fake_kernels_pkg:rule_files\n")
    return pkg / "rules" / "kernels.rules"


def test_entry_point_rule_files_are_loaded(tmp_path: Path, work: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    rules_file = _fake_distribution(tmp_path)
    assert load_rules().plugin("my_fused_gelu") is None
    monkeypatch.syspath_prepend(str(tmp_path))
    rules = load_rules()
    rule = rules.plugin("my_fused_gelu")
    assert rule is not None and rule.roles == ("data", "bias")
    assert str(rules_file) in rules.files
    # the command picks it up too, with no --rules
    data = json.loads(run("coverage", "--format", "json", extra_path=tmp_path).stdout)
    plugins = {p["op"]: p for p in data["plugins"]}
    assert "kernels.rules:2:1" in plugins["my_fused_gelu"]["where"]
    from msc_rules.library import reset_default_rules

    reset_default_rules()
    try:
        out = ok("coverage", work / "plugin_model.py", "--fail-under", "100")
    finally:
        monkeypatch.undo()
        reset_default_rules()
    assert re.search(r"plugin:my_fused_gelu\s+1\s+plugin\s+\S*kernels\.rules:2:1", out)


def test_a_broken_rule_pack_is_named_and_can_be_switched_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from msc_rules.library import reset_default_rules

    rules_file = _fake_distribution(tmp_path)
    rules_file.write_text("plugin my_fused_gelu(data) {\n    out = data +\n}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_kernels_pkg", raising=False)  # an earlier test's
    reset_default_rules()
    try:
        rc, out, err = call("coverage", "cnn")
        assert rc == 1 and out == ""
        assert f"{rules_file}:2:17: error: " in err
        assert ("[rule pack 'fake_kernels' of distribution 'fake-kernels 1.0'; run without "
                "packs: --no-packs or MSC_RULES_PACKS=0]") in err
        ok("coverage", "cnn", "--no-packs")
        rc, out, _ = call("check", "--no-packs", "--no-examples")
        assert rc == 0, out
        monkeypatch.setenv("MSC_RULES_PACKS", "0")
        reset_default_rules()
        ok("coverage", "cnn")
        assert load_rules().plugin("my_fused_gelu") is None
        monkeypatch.setenv("MSC_RULES_PACKS", "1")
        assert load_rules(packs=False).plugin("my_fused_gelu") is None
        # a pack whose entry point cannot even be imported
        rules_file.write_text(PLUGIN_RULES)
        (tmp_path / "fake_kernels_pkg" / "__init__.py").write_text("raise ImportError('gone')\n")
        sys.modules.pop("fake_kernels_pkg", None)
        reset_default_rules()
        rc, _, err = call("annotate", "cnn")
        assert rc == 1
        assert "cannot load: ImportError: gone [rule pack 'fake_kernels' of distribution" in err
    finally:
        monkeypatch.undo()
        reset_default_rules()
