"""Loading MODEL arguments of the `msc-rules` command into an IRModule.

A MODEL is one of:
- a bundled example by name (`cnn`, `transformer`; see `bundled_examples()`),
- a TVMScript file (`.py`): parsed with `tvm.script.from_source` when it is TVMScript
  as `mod.script()` prints it (with or without show_meta; without, constants are
  placeholders of unknown rank and a ModelWarning says so), else run as Python with
  its folder on sys.path and the IRModule it defines is taken (`Module`, `mod`, or
  the only one),
- an IRModule saved with `tvm.ir.save_json` (`.json`),
- an ONNX model (`.onnx`, needs the `onnx` package) imported with `relax.frontend.onnx`,
- a torch ExportedProgram saved with `torch.export.save` (`.pt2`, needs torch) imported
  with `relax.frontend.torch.from_exported_program`.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import logging
import os
import re
import runpy
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
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


class ModelWarning(UserWarning):
    """A model that loads, but not completely (e.g. TVMScript printed without constants)."""


def load_model(spec: str) -> tvm.IRModule:
    """Load a MODEL argument (see the module docstring) as an IRModule.

    Issues a ModelWarning when the model loads incompletely.
    """
    path = resolve(spec)
    notes: list[str] = []
    # The error is made inside _quiet_natives and raised after it: the failed load's
    # frames (and the half-built TVM objects they hold) must be freed while native
    # output is still filtered.
    with _quiet_natives():
        mod, error = _load_quietly(path, notes)
        if error is not None:
            gc.collect()  # what the failed load left half-built is destroyed here
    for note in notes:
        warnings.warn(note, ModelWarning, stacklevel=2)
    if error is not None:
        raise error
    assert mod is not None
    return mod


def _load_quietly(path: Path, notes: list[str]) -> tuple[tvm.IRModule | None, MscRulesError | None]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # frontends' deprecation chatter is not for users
            return _load(path, path.suffix.lower(), notes), None
    except MscRulesError as err:
        return None, err.with_traceback(None)
    except OSError as err:
        return None, ModelError(f"cannot read '{path}': {err.strerror or err}")
    except Exception as err:  # frontends raise anything; one clear line for the user
        return None, ModelError(f"cannot load '{path}': {_first_line(err)}")


# Printed by TVM's C++ BlockBuilder when a failed parse or import drops it half-built:
# noise after the error we report.
_NATIVE_NOISE = ("BlockBuilder destroyed with remaining blocks",)
_REDRAWN = re.compile(r"\r\x1b\[K[^\r\n]*")


@contextlib.contextmanager
def _quiet_natives() -> Iterator[None]:
    """Keep what native code (TVM's C++ warnings) and torch.export's logger write during
    a load away from the user, except lines that are not known noise.

    The C++ side writes to file descriptor 2 directly, so the descriptor itself is
    redirected to a temporary file for the block, then the kept lines are written back.
    """
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.ERROR)  # it logs a whole traceback before raising
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        try:
            yield
        finally:
            logger.setLevel(level)
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            logger.setLevel(level)
            tmp.seek(0)
            # progress lines drawn meanwhile (redrawn in place) are stale by now
            text = _REDRAWN.sub("", tmp.read().decode("utf-8", "replace"))
            kept = [line for line in text.splitlines(True)
                    if not any(noise in line for noise in _NATIVE_NOISE)]
            if kept:
                sys.stderr.write("".join(kept))


def _load(path: Path, suffix: str, notes: list[str]) -> tvm.IRModule:
    if suffix == ".json":
        return _load_json(path)
    if suffix == ".py":
        return _load_script(path, notes)
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
        op = _UNREGISTERED.search(str(err))
        if op:
            raise ModelError(
                f"'{path}' uses the op '{op.group(1)}', which is not registered in this "
                "process: import the module that registers it first with --import MODULE "
                "(from Python: import it before loading)") from None
        raise ModelError(
            f"'{path}' is not an IRModule saved with tvm.ir.save_json ({_first_line(err)})"
        ) from None
    return _as_module(obj, path)


_UNREGISTERED = re.compile(r"Operator (\S+) is not registered")


def _is_printed_script(tree: ast.Module) -> bool:
    """True when a file is TVMScript as `mod.script()` prints it: classes and functions,
    and at most the printer's own preamble (`n = TypeVar("n")`, `metadata =
    tvm.ir.load_json(...)` with show_meta=True). Anything else (imports, other
    statements) makes it a Python program to run."""
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and ast.unparse(node.value.func) in ("TypeVar", "tvm.ir.load_json")):
            continue
        return False
    return True


class _MissingConstants:
    """`metadata` for TVMScript printed without its constants (`mod.script()` writes
    `metadata["relax.expr.Constant"][0]` and leaves the values out): each one becomes a
    free variable of unknown rank, so the rest of the module loads."""

    def __init__(self) -> None:
        self.made: dict[tuple[str, int], relax.Var] = {}

    def __getitem__(self, kind: str) -> Any:
        return _ConstantsOf(self, kind)


class _ConstantsOf:
    def __init__(self, table: _MissingConstants, kind: str) -> None:
        self.table = table
        self.kind = kind

    def __getitem__(self, index: int) -> relax.Var:
        key = (self.kind, index)
        var = self.table.made.get(key)
        if var is None:
            from tvm.script import relax as R

            var = relax.Var(f"metadata_{index}", R.Tensor(ndim=-1).asobject())
            self.table.made[key] = var
        return var


def _from_printed(text: str, path: Path, notes: list[str]) -> tvm.IRModule:
    try:
        return _as_module(tvm.script.from_source(text), path)
    except Exception as err:
        if "Undefined variable: metadata" not in str(err):
            raise
    from tvm.script.parser.core.entry import _default_globals

    table = _MissingConstants()
    names = {**_default_globals(), "metadata": table}
    mod = _as_module(tvm.script.from_source(text, extra_vars=names, check_well_formed=False),
                     path)
    notes.append(
        f"'{path}' was printed without its constants (mod.script() leaves them out): "
        f"its {len(table.made)} constant(s) are read as placeholders of unknown rank, "
        "which get no layout; print it with mod.script(show_meta=True) or save it with "
        "tvm.ir.save_json to keep them")
    return mod


def _load_script(path: Path, notes: list[str]) -> tvm.IRModule:
    text = path.read_text()
    try:
        tree = ast.parse(text)
    except SyntaxError as err:
        raise ModelError(f"{path}:{err.lineno}:{err.offset}: error: {err.msg}") from None
    if _is_printed_script(tree):
        return _from_printed(text, path, notes)
    # a module beside the file can be imported, as when running it with python
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        found = {k: v for k, v in runpy.run_path(str(path)).items()
                 if isinstance(v, tvm.IRModule) and not k.startswith("_")}
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
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

    if path.stat().st_size == 0:
        raise ModelError(f"'{path}' is empty, not a torch ExportedProgram (torch.export.save)")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"'{path}' is not a torch ExportedProgram saved with "
                         "torch.export.save (not a zip archive: truncated or corrupt?)")
    ep = torch.export.load(str(path))
    return from_exported_program(ep)


__all__ = ["ModelError", "ModelWarning", "SUFFIXES", "bundled_examples", "load_model", "resolve"]
