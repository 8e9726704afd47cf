"""The rule language front end: syntax, checks, errors with exact positions."""

from __future__ import annotations

from pathlib import Path

import pytest

from msc_rules.dsl.parse import parse_text
from msc_rules.dsl.ruleset import compile_check, load_rules
from msc_rules.errors import Diagnostic, RuleFileError


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def errors_of(*paths: Path, builtin: bool = False) -> list[Diagnostic]:
    return compile_check(list(paths), builtin=builtin)


def only_error(*paths: Path, builtin: bool = False) -> Diagnostic:
    errs = errors_of(*paths, builtin=builtin)
    assert len(errs) == 1, [e.format() for e in errs]
    return errs[0]


def test_syntax_error_position_and_caret(tmp_path: Path) -> None:
    p = write(tmp_path, "a.rules", "op relax.foo(data) {\n    out = data +\n}\n")
    err = only_error(p)
    assert (err.file, err.line, err.col) == (str(p), 2, 17)
    assert "unexpected end of line" in err.message
    text = err.format()
    assert text.splitlines()[0].startswith(f"{p}:2:17: error: unexpected end of line")
    assert text.splitlines()[1] == "        out = data +"
    assert text.splitlines()[2] == "    " + " " * 16 + "^"


def test_unexpected_character(tmp_path: Path) -> None:
    p = write(tmp_path, "a.rules", "family f(data) {\n  out = data $\n}\n")
    err = only_error(p)
    assert (err.line, err.col) == (2, 14)
    assert "unexpected character '$'" in err.message


def test_unknown_function(tmp_path: Path) -> None:
    p = write(tmp_path, "a.rules", "op relax.foo(data) {\n  out = permutee(data, [0])\n}\n")
    err = only_error(p)
    assert (err.line, err.col) == (2, 9)
    assert err.message.startswith("unknown function 'permutee'")


def test_wrong_arity(tmp_path: Path) -> None:
    p = write(tmp_path, "a.rules", "op relax.foo(data) {\n  out = drop(data)\n}\n")
    err = only_error(p)
    assert (err.line, err.col) == (2, 9)
    assert "drop() takes 2 argument(s), got 1" in err.message


def test_unknown_role(tmp_path: Path) -> None:
    p = write(tmp_path, "a.rules", "op relax.foo(data, weight) {\n  out = wieght\n}\n")
    err = only_error(p)
    assert (err.line, err.col) == (2, 9)
    assert "unknown role 'wieght'" in err.message and "data, weight, out" in err.message


def test_unknown_role_as_target(tmp_path: Path) -> None:
    p = write(tmp_path, "a.rules", "op relax.foo(data) {\n  bias = data\n}\n")
    err = only_error(p)
    assert (err.line, err.col) == (2, 3)
    assert "unknown role 'bias'" in err.message


def test_op_defined_twice_without_override(tmp_path: Path) -> None:
    p = write(
        tmp_path, "a.rules", "family e(data) { out = data }\nop relax.foo : e\nop relax.foo : e\n"
    )
    err = only_error(p)
    assert (err.line, err.col) == (3, 4)
    assert "op 'relax.foo' is already defined at" in err.message
    assert f"{p}:2:4" in err.message and "override" in err.message


def test_redefining_a_library_op_needs_override(tmp_path: Path) -> None:
    p = write(tmp_path, "mine.rules", "op relax.nn.relu(data) {\n  out = data\n}\n")
    err = only_error(p, builtin=True)
    assert (err.file, err.line, err.col) == (str(p), 1, 4)
    assert "already defined" in err.message and "elementwise.rules" in err.message


def test_override_replaces_a_library_rule(tmp_path: Path) -> None:
    p = write(tmp_path, "mine.rules", 'override op relax.nn.relu(data) {\n  out = "AB"\n}\n')
    rs = load_rules(p)
    rule = rs.lookup("relax.nn.relu")
    assert rule is not None and rule.pos.file == str(p) and len(rule.equations) == 1


def test_override_of_an_op_without_rule(tmp_path: Path) -> None:
    p = write(tmp_path, "a.rules", "override op relax.foo(data) {\n  out = data\n}\n")
    err = only_error(p)
    assert (err.line, err.col) == (1, 13)
    assert "'override' of op 'relax.foo', which has no rule to override" in err.message


def test_include_of_missing_file(tmp_path: Path) -> None:
    p = write(tmp_path, "a.rules", '# top\ninclude "nothere.rules"\n')
    err = only_error(p)
    assert (err.line, err.col) == (2, 1)
    assert "included file 'nothere.rules' not found" in err.message


def test_include_loads_families_once(tmp_path: Path) -> None:
    write(tmp_path, "fam.rules", "family e(data) {\n  out = data\n  data = out\n}\n")
    a = write(tmp_path, "a.rules", 'include "fam.rules"\ninclude "fam.rules"\nop relax.foo : e\n')
    rs = load_rules(a, builtin=False)
    rule = rs.lookup("relax.foo")
    assert rule is not None and rule.family == "e" and len(rule.forward) == 1
    assert len(rule.backward) == 1


def test_unknown_family(tmp_path: Path) -> None:
    p = write(tmp_path, "a.rules", "op relax.foo, relax.bar : nofam\n")
    err = only_error(p)
    assert (err.line, err.col) == (1, 1) and "unknown family 'nofam'" in err.message


def test_all_errors_of_a_file_are_reported(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "a.rules",
        "op relax.a(data) {\n  out = nope(data)\n}\nop relax.b(data) {\n  out = x\n}\n",
    )
    errs = errors_of(p)
    assert [(e.line, e.col) for e in errs] == [(2, 9), (5, 9)]


def test_weak_only_last(tmp_path: Path) -> None:
    p = write(tmp_path, "a.rules", "op relax.a(x, y) {\n  x ?= y = out\n}\n")
    err = only_error(p)
    assert err.line == 2 and "'?=' must be the last" in err.message


def test_ignore_needs_reason_and_matches_patterns(tmp_path: Path) -> None:
    p = write(tmp_path, "a.rules", 'ignore relax.vm.*, relax.print : "no tensors"\n')
    rs = load_rules(p, builtin=False)
    assert rs.status("relax.vm.alloc_storage") == "ignored"
    assert rs.status("relax.print") == "ignored"
    assert rs.status("relax.add") == "undecided"
    q = write(tmp_path, "b.rules", 'ignore relax.print : "  "\n')
    assert "needs a reason" in only_error(q).message


def test_missing_rule_file() -> None:
    with pytest.raises(RuleFileError) as info:
        load_rules("/nonexistent/x.rules")
    assert "rule file not found" in str(info.value)


def test_chained_targets_and_tuple_ports(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "a.rules",
        'op relax.a(data, g, b) {\n  g = b = "O"\n  out = (data, "O")\n  data = out[0]\n}\n',
    )
    rule = load_rules(p, builtin=False).lookup("relax.a")
    assert rule is not None
    assert [e.target for e in rule.equations] == [
        ("g", None),
        ("b", None),
        ("out", None),
        ("data", None),
    ]
    assert rule.equations[3].strict_reads == (("out", 0),)


def test_read_sets_distinguish_type_and_partial_reads(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "a.rules",
        "op relax.a(x, y) {\n  out = reshape(x, shape(x), shape(out))\n"
        "  y ?= broadcast(out, x, y)\n  x = y ?? out\n}\n",
    )
    rule = load_rules(p, builtin=False).lookup("relax.a")
    assert rule is not None
    e0, e1, e2 = rule.equations
    assert e0.strict_reads == (("x", None),) and e0.partial_reads == () and e0.mints
    assert e1.weak and e1.strict_reads == () and e1.partial_reads == ("x", "y")
    assert e2.strict_reads == (("out", None),) and e2.partial_reads == ("y",)


def test_comments_semicolons_and_blank_lines() -> None:
    rf = parse_text("# c\n\nfamily e(data) { out = data; data = out }  # trailing\n", "t")
    fam = rf.items[0]
    assert getattr(fam, "name", None) == "e" and len(getattr(fam, "equations", ())) == 2


def test_builtin_library_loads_without_errors() -> None:
    rs = load_rules()
    assert rs.lookup("relax.nn.conv2d") is not None
    assert rs.roles("relax.nn.conv2d") == ("data", "weight")
    assert rs.base_name("relax.nn.conv2d") == "conv2d"
    assert rs.base_name("relax.image.resize2d") == "resize2d"
