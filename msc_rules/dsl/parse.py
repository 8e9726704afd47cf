"""Parse rule files: text -> lark tree -> AST with file:line:col on every node."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import lark
from lark import Token, Transformer, v_args

from ..errors import Diagnostic, RuleFileError
from ..resources import grammar_path
from . import ast, cache


def grammar_text() -> str:
    """The DSL grammar, shipped as package data (`grammar/rules.lark`)."""
    return grammar_path().read_text()


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(
        grammar_text(),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
        cache=True,
    )


_TERMINAL_WORDS = {
    "_NL": "end of line",
    "NAME": "a name",
    "STRING": "a string",
    "INT": "an integer",
    "SIGNED_INT": "an integer",
    "ASSIGN": "'=' or '?='",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "COLON": "':'",
    "DOT": "'.'",
    "$END": "end of file",
}


def _describe_terminal(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    # Keywords and punctuation are anonymous terminals (`name` is `__ANON_0`, `->` is
    # `__ANON_1`): quote their text instead of printing "anon_0" (found by
    # tests/test_fuzz_dsl.py::test_grammar_generated_texts_keep_the_error_contract).
    try:
        pattern = _parser().get_terminal(name).pattern
    except KeyError:
        return name.lower().strip("_")
    if pattern.type == "str":
        return f"'{pattern.value}'"
    return name.lower().strip("_")


def _describe_expected(expected: set[str]) -> str:
    words = sorted({_describe_terminal(t) for t in expected})
    if len(words) > 8:
        words = [*words[:8], "..."]
    return ", ".join(words)


def _syntax_diagnostic(path: str, lines: list[str], err: lark.UnexpectedInput) -> Diagnostic:
    line = max(getattr(err, "line", 1) or 1, 1)
    col = max(getattr(err, "column", 1) or 1, 1)
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    if isinstance(err, lark.UnexpectedToken):
        tok = err.token
        what = "end of file" if tok.type == "$END" else (
            "end of line" if tok.type == "_NL" else f"'{tok}'"
        )
        msg = f"unexpected {what}; expected {_describe_expected(set(err.expected))}"
    elif isinstance(err, lark.UnexpectedCharacters):
        ch = source[col - 1] if 0 < col <= len(source) else "?"
        msg = f"unexpected character '{ch}'"
        allowed = getattr(err, "allowed", None)
        if allowed:
            msg += f"; expected {_describe_expected(set(allowed))}"
    else:
        msg = "unexpected end of file"
    return Diagnostic(path, line, col, msg, source)


def _split_lines(text: str) -> list[str]:
    """The lines of `text` as the parser numbers them.

    Only '\n' ends a line for lark (`_NL` is `\r?\n` or `;`), whereas str.splitlines()
    also breaks at a lone '\r', '\x0c', '\x1c'-'\x1e', '\x85', '\u2028' and '\u2029',
    which may sit in comments and strings: the quoted source line was then a line off
    (found by tests/test_fuzz_dsl.py; see test_diagnostics_quote_the_line_they_point_at).
    """
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]


MAX_NESTING = 100
"""The deepest parse tree accepted (the library needs 15). Deeper trees (thousands of
`-`, `not` or `[`) would exhaust Python's recursion limit in the tree transformer, the
compiler or the pickled AST cache; they are reported as a rule-file error instead."""


def _too_deep(tree: lark.Tree[Token]) -> lark.Tree[Token] | Token | None:
    """The first node (in file order) deeper than MAX_NESTING, found without recursion."""
    stack: list[tuple[Any, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            return node
        if isinstance(node, lark.Tree):
            stack.extend((c, depth + 1) for c in reversed(node.children) if c is not None)
    return None


def _nesting_diagnostic(path: str, lines: list[str], node: Any) -> Diagnostic:
    if isinstance(node, Token):
        line, col = node.line or 1, node.column or 1
    else:
        meta = node.meta
        empty = getattr(meta, "empty", True)
        line, col = (1, 1) if empty else (meta.line, meta.column)
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    return Diagnostic(path, line, col,
                      f"expression nests too deeply (more than {MAX_NESTING} levels)", source)


def parse_text(text: str, path: str = "<string>") -> ast.RuleFile:
    """Parse rule-file text; raise RuleFileError with the position of a syntax error."""
    lines = _split_lines(text)
    try:
        tree = _parser().parse(text + "\n")
    except lark.UnexpectedInput as err:
        raise RuleFileError([_syntax_diagnostic(path, lines, err)]) from None
    # RecursionError used to escape here for deeply nested expressions (found by
    # tests/test_fuzz_dsl.py::test_deep_nesting_is_a_rule_file_error)
    deep = _too_deep(tree)
    if deep is not None:
        raise RuleFileError([_nesting_diagnostic(path, lines, deep)])
    builder = _AstBuilder(path, lines)
    try:
        items = builder.transform(tree)
    except lark.exceptions.VisitError as err:
        if isinstance(err.orig_exc, RuleFileError):
            raise err.orig_exc from None
        raise
    if builder.errors:
        raise RuleFileError(builder.errors)
    return ast.RuleFile(path, tuple(items), tuple(lines))


_AST_VERSION = "1"


@functools.lru_cache(maxsize=1)
def _grammar_digest() -> str:
    return hashlib.sha1(grammar_text().encode()).hexdigest()


def parse_file(path: str | Path) -> ast.RuleFile:
    """Read and parse one rule file.

    Parsed ASTs are cached on disk (dsl/cache.py), keyed by the file's text, its path
    and the grammar, so loading the library skips the parser after the first run. Set
    MSC_RULES_NO_CACHE=1 to bypass the cache.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise RuleFileError(
            [Diagnostic(str(p), 1, 1, f"cannot read rule file: {err.strerror or err}")]
        ) from None
    except UnicodeDecodeError as err:
        # used to escape as UnicodeDecodeError (found by tests/test_fuzz_dsl.py::
        # test_invalid_utf8_is_a_rule_file_error): report the first bad byte's position
        raise RuleFileError([_decode_diagnostic(str(p), err)]) from None
    where = cache.folder()
    if where is None:
        return parse_text(text, str(p))
    key = hashlib.sha1(
        "\0".join((_AST_VERSION, _grammar_digest(), str(p), text)).encode()
    ).hexdigest()
    got = cache.load(where, key)
    if got is not None:
        return got
    rf = parse_text(text, str(p))  # raises on errors: only clean files are cached
    cache.store(where, key, rf)
    return rf


def _decode_diagnostic(path: str, err: UnicodeDecodeError) -> Diagnostic:
    head = err.object[: err.start]
    line = head.count(b"\n") + 1
    start = head.rfind(b"\n") + 1
    col = len(head[start:].decode("utf-8", errors="replace")) + 1
    end = err.object.find(b"\n", start)
    source = err.object[start : None if end < 0 else end].decode("utf-8", errors="replace")
    return Diagnostic(path, line, col,
                      f"rule files are UTF-8 text; byte 0x{err.object[err.start]:02x} is not "
                      "valid UTF-8 here", source.rstrip("\r"))


# ---- tree -> AST -------------------------------------------------------------------


def _unquote(tok: Token | str) -> str:
    return str(tok)[1:-1]


@v_args(meta=True)
class _AstBuilder(Transformer[Token, Any]):
    """Turns the lark tree into AST nodes; collects semantic syntax errors."""

    def __init__(self, path: str, lines: list[str]) -> None:
        super().__init__()
        self.path = path
        self.lines = lines
        self.errors: list[Diagnostic] = []

    def _pos(self, meta: Any) -> ast.Pos:
        if getattr(meta, "empty", True):
            return ast.Pos(self.path, 1, 1)
        return ast.Pos(self.path, meta.line, meta.column)

    def _tpos(self, tok: Token) -> ast.Pos:
        return ast.Pos(self.path, tok.line or 1, tok.column or 1)

    def _error(self, pos: ast.Pos, message: str) -> None:
        src = self.lines[pos.line - 1] if 0 < pos.line <= len(self.lines) else ""
        self.errors.append(Diagnostic(pos.file, pos.line, pos.col, message, src))

    def _text(self, meta: Any) -> str:
        if getattr(meta, "empty", True):
            return ""
        first = self.lines[meta.line - 1]
        if meta.line == meta.end_line:
            return first[meta.column - 1 : meta.end_column - 1].strip()
        return first[meta.column - 1 :].split("#", 1)[0].strip()

    # -- file structure
    def start(self, meta: Any, items: list[Any]) -> list[Any]:
        return items

    def include(self, meta: Any, c: list[Any]) -> ast.Include:
        return ast.Include(_unquote(c[0]), self._pos(meta))

    def roles(self, meta: Any, c: list[Any]) -> tuple[str, ...]:
        names = tuple(str(t) for t in c if t is not None)
        seen: set[str] = set()
        for tok in c:
            if tok is None:
                continue
            if str(tok) == "out":
                self._error(self._tpos(tok), "'out' is the output port and cannot be a role")
            if str(tok) in seen:
                self._error(self._tpos(tok), f"role '{tok}' is listed twice")
            seen.add(str(tok))
        return names

    def body(self, meta: Any, c: list[Any]) -> tuple[ast.Equation, ...]:
        return tuple(e for e in c if e is not None)

    def family(self, meta: Any, c: list[Any]) -> ast.Family:
        return ast.Family(str(c[0]), c[1], c[2], self._pos(meta))

    def opname(self, meta: Any, c: list[Any]) -> tuple[str, ast.Pos]:
        return ".".join(str(t) for t in c), self._pos(meta)

    def op_list(self, meta: Any, c: list[Any]) -> tuple[tuple[str, ast.Pos], ...]:
        return tuple(c)

    def op_def(self, meta: Any, c: list[Any]) -> ast.OpDef:
        override = c[0] is not None
        ops = c[1]
        if isinstance(c[2], Token):  # `op a, b : family`
            fam = c[2]
            return ast.OpDef(ops, str(fam), (), (), override, self._pos(meta))
        return ast.OpDef(ops, None, c[2], c[3], override, self._pos(meta))

    def plugin_def(self, meta: Any, c: list[Any]) -> ast.PluginDef:
        return ast.PluginDef(str(c[1]), c[2], c[3], c[0] is not None, self._pos(meta))

    def pattern(self, meta: Any, c: list[Any]) -> tuple[str, ast.Pos]:
        return ".".join(str(t) for t in c), self._pos(meta)

    def pattern_list(self, meta: Any, c: list[Any]) -> tuple[tuple[str, ast.Pos], ...]:
        return tuple(c)

    def ignore(self, meta: Any, c: list[Any]) -> ast.Ignore:
        reason = _unquote(c[1]).strip()
        if not reason:
            self._error(self._tpos(c[1]), "an ignore needs a reason")
        return ast.Ignore(c[0], reason, self._pos(meta))

    def name_decl(self, meta: Any, c: list[Any]) -> ast.NameDecl:
        base = _unquote(c[1])
        if not base or any(ch in base for ch in " ./:<>"):
            self._error(self._tpos(c[1]), f"invalid base name \"{base}\"")
        return ast.NameDecl(c[0][0], base, self._pos(meta))

    # -- equations
    def _as_port(self, e: ast.Expr) -> ast.Port | None:
        port = ast.port_ref(e)
        return None if port is None else ast.Port(*port)

    def equation(self, meta: Any, c: list[Any]) -> ast.Equation:
        terms = c[0::2]
        ops = [str(t) for t in c[1::2]]
        targets: list[ast.Port] = []
        for term in terms[:-1]:
            port = self._as_port(term)
            if port is None:
                self._error(
                    term.pos, "the left side of '=' must be a port (a role, out or out[i])"
                )
            else:
                targets.append(port)
        if "?=" in ops[:-1]:
            self._error(self._pos(meta), "'?=' must be the last '=' of an equation")
        return ast.Equation(
            tuple(targets), terms[-1], ops[-1] == "?=", self._pos(meta), self._text(meta)
        )

    # -- expressions
    def cond(self, meta: Any, c: list[Any]) -> ast.Cond:
        return ast.Cond(c[0], c[1], c[2], self._pos(meta))

    def _binop(self, meta: Any, op: str, c: list[Any]) -> ast.BinOp:
        return ast.BinOp(op, c[0], c[1], self._pos(meta))

    def coalesce(self, meta: Any, c: list[Any]) -> ast.BinOp:
        return self._binop(meta, "??", c)

    def disj(self, meta: Any, c: list[Any]) -> ast.BinOp:
        return self._binop(meta, "or", c)

    def conj(self, meta: Any, c: list[Any]) -> ast.BinOp:
        return self._binop(meta, "and", c)

    def cmp(self, meta: Any, c: list[Any]) -> ast.BinOp:
        return ast.BinOp(str(c[1]), c[0], c[2], self._pos(meta))

    def arith(self, meta: Any, c: list[Any]) -> ast.BinOp:
        return ast.BinOp(str(c[1]), c[0], c[2], self._pos(meta))

    def neg(self, meta: Any, c: list[Any]) -> ast.UnOp:
        return ast.UnOp("not", c[0], self._pos(meta))

    def negate(self, meta: Any, c: list[Any]) -> ast.UnOp:
        return ast.UnOp("-", c[0], self._pos(meta))

    def index(self, meta: Any, c: list[Any]) -> ast.Index:
        return ast.Index(c[0], c[1], self._pos(meta))

    def call(self, meta: Any, c: list[Any]) -> ast.Call:
        return ast.Call(str(c[0]), tuple(a for a in c[1:] if a is not None), self._pos(meta))

    def attr(self, meta: Any, c: list[Any]) -> ast.Attr:
        return ast.Attr(str(c[0]), self._pos(meta))

    def name(self, meta: Any, c: list[Any]) -> ast.Name:
        return ast.Name(str(c[0]), self._pos(meta))

    def tuple_expr(self, meta: Any, c: list[Any]) -> ast.TupleExpr:
        return ast.TupleExpr(tuple(a for a in c if a is not None), self._pos(meta))

    def list_expr(self, meta: Any, c: list[Any]) -> ast.ListExpr:
        return ast.ListExpr(tuple(a for a in c if a is not None), self._pos(meta))

    def string(self, meta: Any, c: list[Any]) -> ast.Lit:
        return ast.Lit(_unquote(c[0]), self._pos(meta))

    def int(self, meta: Any, c: list[Any]) -> ast.Lit:
        return ast.Lit(int(c[0]), self._pos(meta))

    def float(self, meta: Any, c: list[Any]) -> ast.Lit:
        return ast.Lit(float(c[0]), self._pos(meta))

    def true(self, meta: Any, c: list[Any]) -> ast.Lit:
        return ast.Lit(True, self._pos(meta))

    def false(self, meta: Any, c: list[Any]) -> ast.Lit:
        return ast.Lit(False, self._pos(meta))

    def none(self, meta: Any, c: list[Any]) -> ast.Lit:
        return ast.Lit(None, self._pos(meta))

    def list_lit(self, meta: Any, c: list[Any]) -> ast.Lit:
        return ast.Lit([x.value for x in c if x is not None], self._pos(meta))

    # -- examples
    def tensor(self, meta: Any, c: list[Any]) -> ast.TensorArg:
        *dims, dtype, layout = c
        shape = tuple(
            int(d) if d.type == "INT" else str(d) for d in dims if d is not None
        )
        dt = str(dtype) if dtype is not None else "float32"
        return ast.TensorArg(
            shape, dt, _unquote(layout) if layout is not None else None, self._pos(meta)
        )

    def shape_arg(self, meta: Any, c: list[Any]) -> ast.ShapeArg:
        dims = tuple(int(d) if d.type == "INT" else str(d) for d in c if d is not None)
        return ast.ShapeArg(dims, self._pos(meta))

    def ex_tuple(self, meta: Any, c: list[Any]) -> ast.TupleArg:
        return ast.TupleArg(tuple(a for a in c if a is not None), self._pos(meta))

    def ex_kwarg(self, meta: Any, c: list[Any]) -> tuple[str, object]:
        return str(c[0]), c[1].value

    def ex_check(self, meta: Any, c: list[Any]) -> tuple[ast.Port, object]:
        idx = int(c[1]) if c[1] is not None else None
        return ast.Port(str(c[0]), idx, self._tpos(c[0])), c[2].value

    def given(self, meta: Any, c: list[Any]) -> tuple[tuple[ast.Port, object], ...]:
        return tuple(c)

    def ex_checks(self, meta: Any, c: list[Any]) -> tuple[tuple[ast.Port, object], ...]:
        return tuple(c)

    def example(self, meta: Any, c: list[Any]) -> ast.Example:
        op = c[0][0]
        given = c[-2] or ()
        checks = c[-1]
        args: list[ast.ExampleArg] = []
        kwargs: list[tuple[str, object]] = []
        for a in c[1:-2]:
            if a is None:
                continue
            if isinstance(a, tuple):
                kwargs.append(a)
            else:
                if kwargs:
                    self._error(a.pos, "positional argument after a keyword argument")
                args.append(a)
        return ast.Example(op, tuple(args), tuple(kwargs), given, checks, self._pos(meta),
                           self._text(meta))
