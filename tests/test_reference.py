"""docs/functions.md: generated from the builtin registry, current, an example each."""

from __future__ import annotations

from pathlib import Path

from msc_rules.dsl import reference
from msc_rules.dsl.functions import BUILTINS

REPO = Path(__file__).resolve().parents[1]


def test_every_builtin_has_an_example_that_evaluates() -> None:
    assert set(reference.EXAMPLES) == set(BUILTINS)
    for name, example in reference.EXAMPLES.items():
        assert example.expr.startswith(f"{name}("), name
        assert reference.evaluate(example) is not None, name


def test_examples_show_what_the_functions_return() -> None:
    ex = reference.EXAMPLES
    assert reference.evaluate(ex["letters"]) == "C"
    assert reference.evaluate(ex["last"]) == "W"
    assert reference.evaluate(ex["permute"]) == "NHWC"
    assert reference.evaluate(ex["reshape"]) == "NC"
    assert reference.evaluate(ex["broadcast"]) == "NCHW"
    assert reference.evaluate(ex["einsum_out"]) == "AC"


def test_the_page_is_current() -> None:
    page = (REPO / "docs" / "functions.md").read_text()
    assert page == reference.render(), (
        "docs/functions.md is stale: python -m msc_rules.dsl.reference docs/functions.md")
    for name, b in BUILTINS.items():
        assert f"## `{reference.signature(b)}`" in page
        assert f"{reference.EXAMPLES[name].expr}  ->  " in page
    assert "## `broadcast(out, roles...)`" in page
    assert "## `range(a, [b])`" in page


def test_main_writes_the_page(tmp_path: Path) -> None:
    target = tmp_path / "functions.md"
    assert reference.main([str(target)]) == 0
    assert target.read_text() == reference.render()
