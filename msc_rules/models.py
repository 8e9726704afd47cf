"""Loading MODEL arguments of the `msc-rules` command into an IRModule.

A MODEL is one of:
- a bundled example by name (`cnn`, `transformer`; see `bundled_examples()`),
- a TVMScript file (`.py`): parsed with `tvm.script.from_source` when it is plain
  TVMScript (as `mod.script()` prints it), else run as Python and the IRModule it
  defines is taken (`Module`, `mod`, or the only one),
- an IRModule saved with `tvm.ir.save_json` (`.json`),
- an ONNX model (`.onnx`, needs the `onnx` package) imported with `relax.frontend.onnx`,
- a torch ExportedProgram saved with `torch.export.save` (`.pt2`, needs torch) imported
  with `relax.frontend.torch.from_exported_program`.
"""

from __future__ import annotations

import ast
import runpy
import warnings
from pathlib import Path
from typing import Any

import tvm
from tvm import relax

from .errors import MscRulesError
from .resources import data_dir

SUFFIXES = (".py", ".json", ".onnx", ".pt2")


class ModelError(MscRulesError):
    """A MODEL argument that cannot be found or loaded."""


def bundled_examples() -> dict[str, Path]:
    """The bundled example models by name (file stem), e.g. {'cnn': .../cnn.json}."""
    try:
        folder = data_dir("examples")
    except FileNotFoundError:
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.json"))}


def resolve(spec: str) -> Path:
    """The file a MODEL argument names: an existing path, or a bundled example's name."""
    path = Path(spec)
    if path.is_file():
        return path
    name = spec[len("example:"):] if spec.startswith("example:") else spec
    examples = bundled_examples()
    if name in examples and (spec.startswith("example:") or not path.exists()):
        return examples[name]
    if path.is_dir():
        raise ModelError(f"model '{spec}' is a directory, not a model file")
    known = ", ".join(examples) or "none"
    raise ModelError(f"model file '{spec}' not found (bundled examples: {known})")


def load_model(spec: str) -> tvm.IRModule:
    """Load a MODEL argument (see the module docstring) as an IRModule."""
    path = resolve(spec)
    suffix = path.suffix.lower()
    try:
        with warnings.catch_warnings():  # frontends' deprecation chatter is not for users
            warnings.simplefilter("ignore")
            return _load(path, suffix)
    except MscRulesError:
        raise
    except OSError as err:
        raise ModelError(f"cannot read '{path}': {err.strerror or err}") from None
    except Exception as err:  # frontends raise anything; one clear line for the user
        raise ModelError(f"cannot load '{path}': {_first_line(err)}") from None


def _load(path: Path, suffix: str) -> tvm.IRModule:
    if suffix == ".json":
        return _load_json(path)
    if suffix == ".py":
        return _load_script(path)
    if suffix == ".onnx":
        return _load_onnx(path)
    if suffix == ".pt2":
        return _load_pt2(path)
    raise ModelError(
        f"cannot tell the format of '{path}': expected one of {', '.join(SUFFIXES)}"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # TVM errors put the useful line last ("...Error: message"); others first.
    msg = next((ln for ln in lines if "error:" in ln.lower()), lines[0] if lines else "")
    return f"{type(err).__name__}: {msg}" if msg else type(err).__name__


def _as_module(obj: Any, path: Path) -> tvm.IRModule:
    if isinstance(obj, tvm.IRModule):
        return obj
    if isinstance(obj, relax.Function):
        return tvm.IRModule({"main": obj})
    raise ModelError(f"'{path}' holds a {type(obj).__name__}, not an IRModule")


def _load_json(path: Path) -> tvm.IRModule:
    text = path.read_text()
    try:
        obj = tvm.ir.load_json(text)
    except Exception as err:
        raise ModelError(
            f"'{path}' is not an IRModule saved with tvm.ir.save_json ({_first_line(err)})"
        ) from None
    return _as_module(obj, path)


def _has_python_statements(text: str) -> bool:
    """True when the file does more than define TVMScript (imports, assignments, ...)."""
    tree = ast.parse(text)
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring
        return True
    return False


def _load_script(path: Path) -> tvm.IRModule:
    text = path.read_text()
    try:
        python = _has_python_statements(text)
    except SyntaxError as err:
        raise ModelError(f"{path}:{err.lineno}:{err.offset}: error: {err.msg}") from None
    if not python:
        return _as_module(tvm.script.from_source(text), path)
    found = {k: v for k, v in runpy.run_path(str(path)).items()
             if isinstance(v, tvm.IRModule) and not k.startswith("_")}
    for name in ("Module", "mod", "module"):
        if name in found:
            return found[name]
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise ModelError(f"'{path}' defines no IRModule (e.g. an @I.ir_module class Module)")
    raise ModelError(f"'{path}' defines several IRModules ({', '.join(sorted(found))}); "
                     "name the one to use 'Module'")


def _load_onnx(path: Path) -> tvm.IRModule:
    try:
        import onnx
    except ImportError:
        raise ModelError(f"loading '{path}' needs the onnx package "
                         "(pip install 'msc_rules[onnx]')") from None
    from tvm.relax.frontend.onnx import from_onnx

    return from_onnx(onnx.load(str(path)))


def _load_pt2(path: Path) -> tvm.IRModule:
    try:
        import torch
    except ImportError:
        raise ModelError(f"loading '{path}' needs torch (pip install torch)") from None
    from tvm.relax.frontend.torch import from_exported_program

    ep = torch.export.load(str(path))
    return from_exported_program(ep)


__all__ = ["ModelError", "SUFFIXES", "bundled_examples", "load_model", "resolve"]
