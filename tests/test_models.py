"""Loading MODEL arguments (msc_rules/models.py): TVMScript as TVM prints it, Python
files that import their neighbours, custom registered ops, broken .pt2 files, and no
native noise after a failed load."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import tvm

from msc_rules import cli
from msc_rules.engine import infer_layouts
from msc_rules.models import ModelError, ModelWarning, load_model

REPO = Path(__file__).resolve().parents[1]


def _python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_tvmscript_printed_with_show_meta_loads_unchanged(tmp_path: Path) -> None:
    mod = load_model("cnn")
    path = tmp_path / "printed_meta.py"
    path.write_text(mod.script(show_meta=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModelWarning)
        loaded = load_model(str(path))
    tvm.ir.assert_structural_equal(loaded, mod)


def test_tvmscript_printed_without_constants_loads_with_a_warning(tmp_path: Path) -> None:
    mod = load_model("cnn")
    path = tmp_path / "printed.py"
    text = mod.script()
    assert 'metadata["' in text and "\nimport" not in text
    path.write_text(text)
    with pytest.warns(ModelWarning, match=r"without its constants[^;]*;[^;]*show_meta=True"):
        loaded = load_model(str(path))
    result = infer_layouts(loaded)
    main = loaded["main"]
    assert result.layout_of(main.params[0]) == "NCHW"
    first = main.body.blocks[0].bindings[0]
    assert result.layout_of(first.var) == "NCHW"  # the conv, its weight a placeholder
    rc = cli.main(["annotate", str(path), "--format", "json", "-q"])
    assert rc == 0


def test_a_python_model_imports_a_module_beside_it(tmp_path: Path) -> None:
    folder = tmp_path / "zoo"
    folder.mkdir()
    (folder / "zoo_helper_for_test.py").write_text(textwrap.dedent("""\
        from tvm import relax
        from tvm.script import relax as R


        def build():
            bb = relax.BlockBuilder()
            x = relax.Var("x", R.Tensor((1, 4, 8, 8), "float32"))
            with bb.function("main", [x]):
                with bb.dataflow():
                    y = bb.emit(relax.op.nn.relu(x))
                    gv = bb.emit_output(y)
                bb.emit_func_output(gv)
            return bb.get()
        """))
    (folder / "model.py").write_text("from zoo_helper_for_test import build\n\nmod = build()\n")
    before = list(sys.path)
    mod = load_model(str(folder / "model.py"))
    assert sys.path == before
    assert "R.nn.relu(x)" in mod.script()


def test_custom_registered_op_needs_import(tmp_path: Path) -> None:
    (tmp_path / "my_test_ops.py").write_text(textwrap.dedent("""\
        import tvm

        OP = "relax.test_models.scale"
        tvm.ir.register_op_attr(OP, "FInferType", lambda call, ctx: call.args[0].ty)
        tvm.ir.register_op_attr(OP, "FPurity", True)
        """))
    (tmp_path / "build.py").write_text(textwrap.dedent("""\
        import my_test_ops
        import tvm
        from tvm import relax
        from tvm.script import relax as R

        bb = relax.BlockBuilder()
        x = relax.Var("x", R.Tensor((1, 8, 4, 4), "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                y = bb.emit(relax.Call(tvm.ir.Op.get(my_test_ops.OP), [x]))
                gv = bb.emit_output(y)
            bb.emit_func_output(gv)
        open("custom.json", "w").write(tvm.ir.save_json(bb.get()))
        """))
    built = _python("build.py", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    failed = _python("-m", "msc_rules", "coverage", "custom.json", cwd=tmp_path)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.strip() == (
        "msc-rules: error: 'custom.json' uses the op 'relax.test_models.scale', which is not "
        "registered in this process: import the module that registers it first with "
        "--import MODULE (from Python: import it before loading)")
    loaded = _python("-m", "msc_rules", "coverage", "custom.json", "--import", "my_test_ops",
                     cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    assert "relax.test_models.scale" in loaded.stdout


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", os.urandom(2000)])
def test_broken_pt2_is_one_line(tmp_path: Path, content: bytes,
                                capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.pt2"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=r"broken\.pt2' is (empty|not a torch ExportedProgram)"):
        load_model(str(path))
    assert cli.main(["coverage", str(path)]) == 1
    out, err = capfd.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("msc-rules: error: ")


def test_a_failed_load_leaves_no_native_warning(tmp_path: Path,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad_script.py"
    path.write_text(textwrap.dedent("""\
        @I.ir_module
        class Module:
            @R.function
            def main(x: R.Tensor((1, 8), "float32")):
                with R.dataflow():
                    y = R.nn.conv2d(x, x)
                    R.output(y)
                return y
        """))
    for _ in range(2):
        with pytest.raises(ModelError, match="requires the input to be 4-dim"):
            load_model(str(path))
    import gc

    gc.collect()
    _, err = capfd.readouterr()
    assert "BlockBuilder destroyed" not in err
    assert err == ""
