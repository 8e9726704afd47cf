"""Fuzzing the rule-language front end: the error contract of parse_text and load_rules.

Two sources of input:
- text generated from the grammar itself (`hypothesis.extra.lark.from_lark` over
  grammar/rules.lark), with every token padded by spaces so keywords and names stay
  apart and a good share of the texts parse and reach the compiler and the loader;
- the real rule files of the library, mutated: characters, lines and tokens deleted,
  duplicated, swapped or replaced.

The contract: the only exception that escapes `parse_text` and `load_rules` is
`RuleFileError`, and each of its diagnostics has a file, a line >= 1, a column >= 1,
a message, and (for the file under test) quotes the line it points at. And whatever
loads never raises at inference time (random rule bodies, at the end of the file).

Every property below has an explicit example budget; each runs in a few seconds.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lark
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark

import msc_rules
from msc_rules.dsl.functions import BUILTINS
from msc_rules.dsl.parse import parse_text
from msc_rules.dsl.ruleset import load_rules
from msc_rules.errors import RuleFileError
from msc_rules.resources import builtin_rule_files, grammar_path

LIBRARY = builtin_rule_files()
LIBRARY_TEXT = {p.name: p.read_text() for p in LIBRARY}


@pytest.fixture(scope="module", autouse=True)
def private_ast_cache() -> Iterator[None]:
    """Point the AST cache at a private directory: fuzzed files must not litter the
    user's cache, and the cache write (pickling the AST) is part of what is tested."""
    old = os.environ.get("MSC_RULES_CACHE_DIR")
    with tempfile.TemporaryDirectory() as d:
        os.environ["MSC_RULES_CACHE_DIR"] = d
        yield
    if old is None:
        del os.environ["MSC_RULES_CACHE_DIR"]
    else:
        os.environ["MSC_RULES_CACHE_DIR"] = old


# ---- the contract ---------------------------------------------------------------------


def lark_lines(text: str) -> list[str]:
    """The lines of `text` as the parser counts them (only '\\n' ends a line)."""
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]


def check_diagnostics(err: RuleFileError, path: str, text: str) -> None:
    """Every diagnostic has a position; those in `path` quote the line they point at."""
    assert err.diagnostics, "a RuleFileError without diagnostics"
    lines = lark_lines(text)
    for d in err.diagnostics:
        assert isinstance(d.file, str) and d.file, d
        assert isinstance(d.line, int) and d.line >= 1, d
        assert isinstance(d.col, int) and d.col >= 1, d
        assert isinstance(d.message, str) and d.message.strip(), d
        if d.file == path:
            assert d.line <= len(lines) + 1, (d, len(lines))
            if d.line <= len(lines) and d.source_line:
                assert d.source_line == lines[d.line - 1], (d, lines[d.line - 1])
        text_out = d.format()
        assert text_out.startswith(f"{d.file}:{d.line}:{d.col}: error: ")
    assert str(err)  # the message renders


def check_parse(text: str, path: str = "<fuzz>") -> bool:
    """parse_text keeps the contract; True when the text parsed."""
    try:
        parse_text(text, path)
    except RuleFileError as err:
        check_diagnostics(err, path, text)
        return False
    return True


def check_load(files: dict[str, str], extra: tuple[Path, ...] = ()) -> bool:
    """load_rules (no builtin library) on `files` written to a fresh directory, after
    the `extra` files; keeps the contract; True when it loaded."""
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for name, text in files.items():
            p = Path(d) / name
            p.write_text(text)
            paths.append(p)
        try:
            load_rules(*extra, *paths, builtin=False)
        except RuleFileError as err:
            # the loader reads with universal newlines (a lone '\r' ends a line there)
            check_diagnostics(err, str(paths[-1]), paths[-1].read_text())
            return False
    return True


# ---- texts from the grammar -------------------------------------------------------------

_GRAMMAR = lark.Lark(grammar_path().read_text(), parser="lalr")

#: names that mean something to the loader and the compiler (roles, builtins, ops)
_VOCAB = sorted({"data", "out", "weight", "lhs", "rhs", "x", "relax", "nn", "add", "relu",
                 "conv2d", "float32", "int32", "axes", "axis", "elementwise", *BUILTINS})


def _padded(s: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return s.map(lambda t: f" {t} ")


def _explicit() -> dict[str, st.SearchStrategy[str]]:
    """A strategy per terminal: the token padded by spaces (the grammar ignores inline
    whitespace, and from_lark inserts it only now and then, so `op relax` would
    otherwise come out as the name `oprelax`)."""
    out: dict[str, st.SearchStrategy[str]] = {}
    for t in _GRAMMAR.terminals:
        if t.name in ("_NL", "WS_INLINE", "COMMENT"):
            continue
        if t.name == "NAME":
            out[t.name] = _padded(st.one_of(
                st.sampled_from(_VOCAB),
                st.from_regex(t.pattern.value, fullmatch=True)))
        elif t.pattern.type == "str":
            out[t.name] = st.just(f" {t.pattern.value} ")
        else:
            out[t.name] = _padded(st.from_regex(t.pattern.value, fullmatch=True))
    return out


GRAMMAR_TEXTS = from_lark(_GRAMMAR, explicit=_explicit())


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.filter_too_much])
@given(text=GRAMMAR_TEXTS)
def test_grammar_generated_texts_keep_the_error_contract(text: str) -> None:
    parsed = check_parse(text)
    event("parsed" if parsed else "syntax error")
    if parsed:
        event("loaded" if check_load({"gen.rules": text}) else "load error")


@settings(max_examples=150)
@given(text=from_lark(_GRAMMAR, start="start"))
def test_unpadded_grammar_texts_keep_the_error_contract(text: str) -> None:
    # from_lark's own output: tokens mostly run together, so most of these are
    # lexically odd (`oprelax.nn`), a different corner of the lexer than above
    if check_parse(text):
        check_load({"gen.rules": text})


# ---- mutated library files ----------------------------------------------------------------

_TOKEN = re.compile(r'"[^"\n]*"|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|-?[0-9]+(?:\.[0-9]+)?|\?\?|\?=|->|'
                    r'//|==|!=|<=|>=|\S|\s+')
_ODD_CHARS = '{}()[],.:;=?"#*-+<>\n\r\t \\\x00\x0c\xff\u2028é$@'

MUTATION = st.tuples(
    st.sampled_from(["char", "line", "token"]),
    st.sampled_from(["delete", "duplicate", "swap", "replace"]),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.sampled_from(_ODD_CHARS),
)


def _mutate_units(units: list[str], how: str, i: int, j: int, odd: str) -> list[str]:
    if not units:
        return [odd]
    a, b = i % len(units), j % len(units)
    units = list(units)
    if how == "delete":
        del units[a]
    elif how == "duplicate":
        units.insert(a, units[a])
    elif how == "swap":
        units[a], units[b] = units[b], units[a]
    else:  # replace: by another unit of the same file, or by an odd character
        units[a] = units[b] if (i + j) % 2 else odd
    return units


def mutate(text: str, mutations: list[tuple[str, str, int, int, str]]) -> str:
    """Apply character, line and token mutations in order."""
    for unit, how, i, j, odd in mutations:
        if unit == "char":
            text = "".join(_mutate_units(list(text), how, i, j, odd))
        elif unit == "line":
            text = "".join(_mutate_units(text.splitlines(keepends=True), how, i, j, odd + "\n"))
        else:
            text = "".join(_mutate_units(_TOKEN.findall(text), how, i, j, odd))
    return text


MUTATED = st.tuples(
    st.sampled_from(sorted(LIBRARY_TEXT)),
    st.lists(MUTATION, min_size=1, max_size=4),
)


def test_mutation_tokenizer_round_trips() -> None:
    for text in LIBRARY_TEXT.values():
        assert "".join(_TOKEN.findall(text)) == text


@settings(max_examples=300)
@given(case=MUTATED)
def test_mutated_library_files_parse_or_fail_with_positions(case: tuple[str, list]) -> None:
    name, mutations = case
    text = mutate(LIBRARY_TEXT[name], mutations)
    assume(text != LIBRARY_TEXT[name])
    event("parsed" if check_parse(text, name) else "syntax error")


@settings(max_examples=60)
@given(case=MUTATED)
def test_mutated_library_files_load_or_fail_with_positions(case: tuple[str, list]) -> None:
    # the mutated file takes the place of the original among the other library files
    # (so its families and ops meet the real ones, as a user's edit would)
    name, mutations = case
    text = mutate(LIBRARY_TEXT[name], mutations)
    others = tuple(p for p in LIBRARY if p.name != name)
    event("loaded" if check_load({name: text}, others) else "load error")


# ---- regressions the fuzzers led to (each once a crash outside the contract) --------------


@pytest.mark.parametrize("expr", ["-" * 3000 + "data", "not " * 3000 + "data",
                                  "[" * 3000 + "]" * 3000, "(" * 3000 + "data" + ")" * 3000],
                         ids=["negate", "not", "list", "parens"])
def test_deep_nesting_is_a_rule_file_error(expr: str) -> None:
    # RecursionError from lark's tree transformer (and, at a few hundred levels, from
    # pickling the AST into the cache) used to escape
    text = f"op relax.foo(data) {{\n    out = {expr}\n}}\n"
    if expr.startswith("("):  # parentheses do not nest the tree: this one is fine
        assert check_parse(text)
        return
    with pytest.raises(RuleFileError) as info:
        parse_text(text, "deep.rules")
    (d,) = info.value.diagnostics
    assert (d.file, d.line) == ("deep.rules", 2) and d.col >= 11
    assert "nest" in d.message
    check_diagnostics(info.value, "deep.rules", text)


@pytest.mark.parametrize("depth", [50, 90, 200, 400, 800])
def test_nesting_near_the_limit_loads_or_is_rejected_cleanly(depth: int, tmp_path: Path) -> None:
    text = f"op relax.foo(data) {{\n    out = {'-' * depth}ndim(data)\n}}\n"
    assert check_load({"deep.rules": text}) == (depth <= 90)


def test_invalid_utf8_is_a_rule_file_error(tmp_path: Path) -> None:
    # UnicodeDecodeError from Path.read_text used to escape
    p = tmp_path / "bad.rules"
    p.write_bytes(b"# ok\nfamily e(data) { out = data }  # caf\xe9\n")
    with pytest.raises(RuleFileError) as info:
        load_rules(p, builtin=False)
    (d,) = info.value.diagnostics
    assert (d.file, d.line, d.col) == (str(p), 2, 37)
    assert "UTF-8" in d.message


def test_include_with_an_overlong_name_is_a_rule_file_error(tmp_path: Path) -> None:
    # OSError (ENAMETOOLONG) from Path.is_file used to escape
    p = tmp_path / "a.rules"
    p.write_text('# x\ninclude "' + "a" * 300 + '.rules"\n')
    with pytest.raises(RuleFileError) as info:
        load_rules(p, builtin=False)
    (d,) = info.value.diagnostics
    assert (d.file, d.line, d.col) == (str(p), 2, 1) and "not found" in d.message


def test_overlong_rule_file_path_is_a_rule_file_error() -> None:
    with pytest.raises(RuleFileError) as info:
        load_rules("b" * 300 + ".rules", builtin=False)
    (d,) = info.value.diagnostics
    assert (d.line, d.col) == (1, 1) and "not found" in d.message


def test_including_a_binary_file_is_a_rule_file_error(tmp_path: Path) -> None:
    (tmp_path / "blob.rules").write_bytes(bytes(range(256)))
    p = tmp_path / "a.rules"
    p.write_text('include "blob.rules"\n')
    with pytest.raises(RuleFileError) as info:
        load_rules(p, builtin=False)
    assert [Path(d.file).name for d in info.value.diagnostics] == ["blob.rules"]
    check_diagnostics(info.value, "", "")


@pytest.mark.parametrize("breaker", ["\r", "\x0c", "\x1c", "\x85", "\u2028"])
def test_diagnostics_quote_the_line_they_point_at(breaker: str) -> None:
    # str.splitlines() breaks lines at characters the parser does not (a lone CR in a
    # comment, a form feed in a string); the quoted source line used to be a line off
    text = (f'# a comment with a{breaker}break\nname relax.x "a{breaker}b"\n'
            "op relax.x(d) {\n out = $\n}\n")
    with pytest.raises(RuleFileError) as info:
        parse_text(text, "t.rules")
    (d,) = info.value.diagnostics
    assert (d.line, d.col) == (4, 8)
    assert d.source_line == " out = $"
    assert "unexpected character '$'" in d.message


def test_crlf_files_report_the_same_positions_as_lf_files() -> None:
    text = "op relax.x(d) {\n out = d +\n}\n"
    errs = []
    for t in (text, text.replace("\n", "\r\n")):
        with pytest.raises(RuleFileError) as info:
            parse_text(t, "t.rules")
        errs.append(info.value.diagnostics)
    assert [(d.line, d.col, d.source_line) for d in errs[0]] == \
           [(d.line, d.col, d.source_line) for d in errs[1]]


def test_expected_keywords_are_quoted_not_named_by_lark() -> None:
    # keywords are anonymous terminals in lark (`->` is __ANON_1, `name` __ANON_0): the
    # message used to say "expected anon_0" (seen in the grammar fuzzer's output)
    with pytest.raises(RuleFileError) as info:
        parse_text("example relax.add(T[1]) out\n", "t.rules")
    (d,) = info.value.diagnostics
    assert d.message == "unexpected 'out'; expected '->', 'given'"
    with pytest.raises(RuleFileError) as info:
        parse_text("42\n", "t.rules")
    assert "'name'" in info.value.diagnostics[0].message
    assert "anon" not in info.value.diagnostics[0].message


# ---- compiled rules at inference time ------------------------------------------------------------
#
# The other half of the contract (README "Errors"): rule evaluation failures and
# conflicts are recorded, never raised. Random rule bodies (ports, attributes,
# literals, every builtin with any arguments, operators, conditionals, indexing,
# tuples and lists) override a few library ops; whatever loads must run through
# infer_layouts and SetExprLayout without an exception.

_ROLES = {"relax.nn.relu": ["data"], "relax.add": ["lhs", "rhs"],
          "relax.nn.conv2d": ["data", "weight"], "relax.split": ["data"]}
_ATTRS = ["axis", "axes", "data_layout", "kernel_layout", "indices_or_sections", "nope"]
_LITERALS = ['"NCHW"', '"AB"', '"O"', '""', '"x y"', '"NN"', "0", "1", "-1", "5", "100",
             "none", "true", "false", "[0, 1]", "[]", "[3, 2, 1, 0]", "1.5", "[-1]"]


def _expressions(ports: list[str]) -> st.SearchStrategy[str]:
    atom = st.one_of(st.sampled_from(_LITERALS),
                     st.sampled_from([*ports, "out", "out[0]", "out[1]"]),
                     st.sampled_from(_ATTRS).map(lambda a: f"attr.{a}"))

    def extend(sub: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        call = st.sampled_from(sorted(BUILTINS)).flatmap(
            lambda f: st.lists(st.one_of(sub, st.sampled_from([*ports, "out"])),
                               min_size=BUILTINS[f].min_args, max_size=BUILTINS[f].max_args)
            .map(lambda args: f"{f}({', '.join(args)})"))
        ops = ["+", "-", "*", "//", "%", "==", "!=", "<", "??", "and", "or"]
        return st.one_of(
            call,
            st.tuples(sub, st.sampled_from(ops), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(sub, sub, sub).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
            st.tuples(sub, sub).map(lambda t: f"{t[0]}[{t[1]}]"),
            st.lists(sub, min_size=2, max_size=3).map(lambda xs: "(" + ", ".join(xs) + ")"),
            st.lists(sub, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
            sub.map(lambda x: f"not {x}"),
            sub.map(lambda x: f"-{x}"))

    return st.recursive(atom, extend, max_leaves=8)


@st.composite
def _overriding_rules(draw: st.DrawFn) -> str:
    op = draw(st.sampled_from(sorted(_ROLES)))
    ports = _ROLES[op]
    eqs = draw(st.lists(st.tuples(st.sampled_from([*ports, "out", "out[0]"]),
                                  st.sampled_from(["=", "?="]), _expressions(ports)),
                        min_size=1, max_size=3))
    body = "\n".join(f"    {t} {a} {e}" for t, a, e in eqs)
    return f"override op {op}({', '.join(ports)}) {{\n{body}\n}}\n"


@pytest.fixture(scope="module")
def odd_rule_module() -> Any:
    from tvm.script import ir as I
    from tvm.script import relax as R

    @I.ir_module
    class M:
        @R.function
        def main(x: R.Tensor((2, 3, 4, 4), "float32"), w: R.Tensor((5, 3, 1, 1), "float32"),
                 v: R.Tensor((4,), "float32")):
            with R.dataflow():
                a = R.nn.relu(x)
                b = R.nn.conv2d(a, w)
                c = R.add(b, v)
                t = R.split(c, 5, axis=1)
                d = R.nn.relu(t[0])
                e = R.nn.relu(v)
                R.output(d, e)
            return (d, e)

    return M


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.function_scoped_fixture])
@given(text=_overriding_rules())
def test_random_rules_never_raise_at_inference_time(text: str, odd_rule_module: Any) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "user.rules"
        p.write_text(text)
        try:
            rules = load_rules(p)
        except RuleFileError as err:
            check_diagnostics(err, str(p), text)
            event("load error")
            return
    event("loaded")
    try:
        res = msc_rules.infer_layouts(odd_rule_module, rules)
    except RuleFileError as err:
        # the one rule mistake found only where a rule meets a call: a tuple field of a
        # port that is a tensor there (reported with the rule's position)
        check_diagnostics(err, str(p), text)
        assert all("is a tensor here, not a tuple" in d.message for d in err.diagnostics)
        event("tuple field of a tensor")
        return
    for leaf, ndim in enumerate(res.view.leaf_ndim):  # whatever the rules say, ranks hold
        lay = res.layouts[leaf]
        assert lay is None or len(lay) == ndim
    msc_rules.SetExprLayout(rules=rules)(odd_rule_module)
