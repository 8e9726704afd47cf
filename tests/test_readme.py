"""The README's examples run as written: the pipeline example under "Compiling with
annotations" is cut out of README.md and executed (it asserts its own outputs)."""

from __future__ import annotations

import contextlib
import io
import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def section_code(heading: str) -> str:
    """The first ```python block of the README section `heading` (a `## ` line)."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    body = text[start:end if end >= 0 else None]
    found = re.search(r"^```python\n(.*?)^```$", body, re.M | re.S)
    assert found, f"no python block under '## {heading}'"
    return found.group(1)


def test_readme_pipeline_example_runs(tmp_path: Path) -> None:
    code = section_code("Compiling with annotations")
    # the example the text describes, not some other block
    assert 'relax_pipeline=pipeline' in code and '"msc_rules"' in code
    assert "annotated_pipeline()" in code and "annotation_passes()" in code
    # run from a file of its own: TVMScript reads a decorated class's source back
    script = tmp_path / "readme_example.py"
    script.write_text(code, encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        namespace = runpy.run_path(str(script), run_name="readme_example")
    # the reader pass saw the markers before lowering, as the README says it prints
    assert out.getvalue().splitlines() == ["conv2d NCHW", "relu NCHW"]
    plain = namespace["plain"]
    assert getattr(plain, "shape", None) == (1, 4, 6, 6)
