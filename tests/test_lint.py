"""What `check` says beyond errors: ops a file adds or overrides, unregistered ops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from msc_rules.lint import file_summaries, registered_ops, summarize

REPO = Path(__file__).resolve().parents[1]


def test_summary_lists_adds_and_overrides_and_warns_on_typos(tmp_path: Path) -> None:
    path = tmp_path / "mine.rules"
    path.write_text(
        "op relax.nn.rleu(data) {\n    out = data\n}\n"
        "override op relax.nn.relu(data) { out = data }\n"
        "plugin my_kernel(data) { out = data }\n"
        "override plugin other_kernel(data) { out = data }\n")
    s = summarize(path)
    assert s.adds == ["op relax.nn.rleu", "plugin my_kernel"]
    assert s.overrides == ["op relax.nn.relu", "plugin other_kernel"]
    (w,) = s.warnings
    assert (w.line, w.col, w.severity) == (1, 4, "warning")
    assert "did you mean 'relax.nn.relu'" in w.message
    assert w.format().startswith(f"{path}:1:4: warning: op 'relax.nn.rleu' is not registered")
    assert s.lines() == [f"{path}: adds op relax.nn.rleu, plugin my_kernel; "
                         "overrides op relax.nn.relu, plugin other_kernel"]
    (again,) = file_summaries([path])
    assert again == s


def test_an_op_registered_by_the_user_is_no_typo(tmp_path: Path) -> None:
    # in a subprocess: an op registered here would stay in this process's registry
    name = "relax.test_lint.my_registered_op"
    (tmp_path / "my_lint_ops.py").write_text(
        f"import tvm\n\ntvm.ir.register_op_attr({name!r}, 'TOpPattern', 0)\n")
    (tmp_path / "custom.rules").write_text(f"op {name}(data) {{ out = data }}\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)

    def check(*extra: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "msc_rules", "check", "custom.rules", *extra],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        return proc.stdout

    assert f"warning: op '{name}' is not registered with TVM" in check()
    out = check("--import", "my_lint_ops")
    assert f"custom.rules: adds op {name}" in out and "warning" not in out
    assert name not in registered_ops()  # nothing leaked into this process


def test_a_file_of_examples_only_has_no_summary_line(tmp_path: Path) -> None:
    path = tmp_path / "ex.rules"
    path.write_text('example relax.nn.relu(T[2,3] "NC") -> out = "NC"\n')
    assert summarize(path).lines() == []


def test_tuple_fields_in_plugin_rules_are_flagged(tmp_path: Path) -> None:
    path = tmp_path / "plug.rules"
    path.write_text("plugin my_fused_bias_relu(data, bias) {\n    out  = data\n"
                    "    data = out\n    bias ?= out[1]\n}\n"
                    "plugin my_pair(data) {\n    out = (data, data)\n    out[1] = data\n}\n"
                    "op relax.nn.relu(data) { out = data[0] }\n")
    s = summarize(path)
    fields = [w for w in s.warnings if "reads field" in w.message]
    assert [(w.line, w.col) for w in fields] == [(4, 13), (8, 5)]
    assert fields[0].message == (
        "'out[1]' reads field 1 of a tuple: right only if 'out' is a tuple at this plugin's "
        "calls; for the letter of axis 1 of a tensor write letters(out, 1, 2)")
    assert fields[0].format().splitlines()[1:] == ["        bias ?= out[1]", " " * 16 + "^"]
