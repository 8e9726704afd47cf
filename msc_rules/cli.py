"""The `msc-rules` command: annotate, coverage, explain, graph, check.

    msc-rules annotate [MODEL] [-o OUT.json] [--format table|json|markdown] [--strict]
    msc-rules coverage [MODEL] [--format text|json|markdown] [--fail-under PERCENT]
    msc-rules explain MODEL TENSOR_NAME [--tree] [--max-steps N]
    msc-rules graph MODEL -o FILE.html|.svg|.dot [--focus NAME --depth K] [--max-nodes N]
    msc-rules check [RULES...] [--no-examples]

MODEL is a TVMScript .py file, an IRModule .json (tvm.ir.save_json), an .onnx file or
a torch ExportedProgram .pt2, or the name of a bundled example (`cnn`, `transformer`).
Every command takes `--rules FILE` (repeatable: user rule files layered over the
library), `--import MODULE` (repeatable: imported first, e.g. to register custom ops),
`--no-packs` (no rule packs of installed packages) and `-q` (no progress line); all
but `check` take `--entry NAME` (the Relax function to start from, default `main`).

Exit status: 0 success; 1 a reported failure (rule errors, failed examples, coverage
under the bar or a guessed weight, unknown tensor, bad model); 2 a usage error; 3 an
internal error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import Diagnostic, MscRulesError, RuleFileError
from .progress import Progress, count_bindings

PROG = "msc-rules"
_MAX_NODES = 2000  # render.MAX_NODES, without importing TVM to build the parser


# --------------------------------------------------------------------------- shared steps


def _rules(args: argparse.Namespace) -> Any:
    from .library import default_rules

    if args.rules or args.no_packs:
        from .dsl.ruleset import load_rules

        return load_rules(*args.rules, packs=False if args.no_packs else None)
    return default_rules()


def _import_modules(names: Sequence[str]) -> None:
    """Import the --import modules (op registrations, ...), the current directory first
    on the path as `python -m` has it."""
    import importlib

    from .models import ModelError

    if names and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:
            raise ModelError(f"cannot import module '{name}' (--import): "
                             f"{type(err).__name__}: {_one_line(err)}") from None


def _model_label(spec: str | None) -> str:
    return spec or "cnn"


def _load(spec: str, progress: Progress) -> Any:
    import warnings

    from .models import ModelWarning, load_model

    progress.stage(f"loading {spec}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ModelWarning)
        mod = load_model(spec)
    for w in caught:
        if issubclass(w.category, ModelWarning):
            progress.done()
            _note(f"warning: {w.message}")
    progress.measure(f"{count_bindings(mod):,} bindings")
    return mod


def _analyze(args: argparse.Namespace, progress: Progress) -> Any:
    from .report import analyze

    rules = _rules(args)
    mod = _load(args.model, progress)
    return analyze(mod, rules, args.entry, progress.stage)


def _annotate(mod: Any, rules: Any, entry: str, strict: bool, allow_guessed: bool = False,
              progress: Progress | None = None) -> tuple[Any, bool, Any]:
    """Names then layouts, from one inference; returns (annotated module, whether names
    were written, the Guesses of that inference).

    Errors are raised before any pass runs (TVM turns an exception raised inside a
    pass into a plain RuntimeError): a bad entry, and with `strict` any binding the
    rules leave without a layout, then (unless `allow_guessed`) any weight whose layout
    is guessed.
    """
    from .errors import GuessedWeightError, MissingLayoutError
    from .guesses import find_guesses
    from .passes import missing_layouts, write_layouts
    from .report import analyze, guessed_weights

    analysis = analyze(mod, rules, entry, progress.stage if progress else None)
    guesses = find_guesses(analysis.result, analysis.mod)
    if strict:
        missing = missing_layouts(analysis.result)
        if missing:
            raise MissingLayoutError(entry, missing)
        weights = [] if allow_guessed else guessed_weights(analysis, guesses)
        if weights:
            raise GuessedWeightError(entry, [w.text() for w in weights])
    if progress:
        progress.stage("writing layouts")
    return write_layouts(analysis.mod, analysis.result), analysis.named, guesses


def _guessed_weights_note(weights: Sequence[Any]) -> None:
    listed = "; ".join(w.text() for w in weights[:20]) + (" ..." if len(weights) > 20 else "")
    _note(f"{len(weights)} weight(s) have a guessed layout: {listed} "
          "(--allow-guessed accepts them)")


def _emit(text: str, out: str | None = None) -> None:
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")
    else:
        sys.stdout.write(text + "\n")


def _note(text: str) -> None:
    sys.stderr.write(f"{PROG}: {text}\n")


# --------------------------------------------------------------------------- commands


def cmd_annotate(args: argparse.Namespace) -> int:
    """Annotate a model; print its tensors; write the annotated module with -o."""
    import tvm

    from .report import render, tensor_rows

    # loading, naming, the view, inference, writing layouts (and the output file)
    progress = Progress(args.quiet, stages=6 if args.output else 5)
    spec = _model_label(args.model)
    if args.model is None:
        from .models import bundled_examples

        others = [n for n in bundled_examples() if n != spec]
        _note(f"no MODEL given: using the bundled example '{spec}'"
              + (f" (others: {', '.join(others)})" if others else ""))
    try:
        rules = _rules(args)
        mod = _load(spec, progress)
        annotated, named, guesses = _annotate(mod, rules, args.entry, args.strict,
                                              args.allow_guessed, progress)
        table = tensor_rows(annotated, args.entry, spec, guesses)
        if args.output:
            progress.stage(f"writing {args.output}")
            Path(args.output).write_text(tvm.ir.save_json(annotated), encoding="utf-8")
            table.output = args.output
    finally:
        progress.done()
    if not named:
        _note("the naming pass (SetExprName) is not available: names are variable names")
    _emit(render(table, args.format))
    if args.output:
        _note(f"wrote the annotated module to {args.output}")
    return 0


def cmd_coverage(args: argparse.Namespace) -> int:
    """The rule library's coverage of registered ops, or of one model."""
    from .report import library_coverage, model_coverage, render

    progress = Progress(args.quiet, stages=1 if args.model is None else 4)
    try:
        if args.model is None:
            progress.stage("loading rules")
            rep: Any = library_coverage(_rules(args))
        else:
            rep = model_coverage(_analyze(args, progress), args.model)
    finally:
        progress.done()
    _emit(render(rep, args.format), args.output)
    if args.fail_under is None:
        return 0
    failed = False
    if rep.percent + 1e-9 < args.fail_under:
        _note(f"coverage {rep.percent:.1f}% is under --fail-under {args.fail_under:g}%")
        failed = True
    weights = getattr(rep, "guessed_weights", [])
    if weights and not args.allow_guessed:
        _guessed_weights_note(weights)
        failed = True
    return 1 if failed else 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Why a tensor has its layout."""
    from .report import explain, render

    progress = Progress(args.quiet, stages=4)
    try:
        analysis = _analyze(args, progress)
        rep = explain(analysis, args.tensor, args.max_steps, args.tree)
    finally:
        progress.done()
    _emit(render(rep, args.format))
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    """Draw the dataflow graph with names and layouts."""
    from .render import graph_data, write_graph

    progress = Progress(args.quiet, stages=6)
    try:
        analysis = _analyze(args, progress)
        progress.stage("laying out the graph")
        title = args.title or f"{Path(args.model).name} ({args.entry})"
        groups = None
        if args.color_by == "group":
            from .channels import channel_groups

            progress.stage("finding channel groups")
            groups = channel_groups(analysis.mod, args.entry, _rules(args))
        g = graph_data(analysis, title, consts=not args.no_consts, focus=args.focus,
                       depth=args.depth, max_nodes=args.max_nodes,
                       collapse=False if args.no_collapse else None, groups=groups)
        progress.stage(f"writing {args.output}")
        kind = write_graph(g, args.output, args.format)
    finally:
        progress.done()
    coloured = "groups" if args.color_by == "group" else "layouts"
    drawn = g.part or f"{len(g.nodes)} tensors"
    _note(f"wrote {kind} graph of {drawn} ({len(g.colors)} {coloured}, "
          f"{g.conflicts} conflicts) to {args.output}")
    return 0


def cmd_channels(args: argparse.Namespace) -> int:
    """List the channel groups of a model."""
    from .channel_report import render_groups
    from .channels import channel_groups

    progress = Progress(args.quiet)
    try:
        mod = _load(args.model, progress)
        progress.stage("finding channel groups")
        groups = channel_groups(mod, args.entry, _rules(args))
    finally:
        progress.done()
    _emit(render_groups(groups, args.model, args.format), args.output)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Prune every exact group by the L1-norm magnitude criterion; write the module."""
    import tvm

    from .channel_report import PruneSummary, count_macs, count_params, prune_by_magnitude

    progress = Progress(args.quiet)
    try:
        rules = _rules(args)
        mod = _load(args.model, progress)
        progress.stage("pruning")
        pruned, groups, sel = prune_by_magnitude(mod, args.ratio, args.allow_io, args.entry,
                                                 rules)
        progress.stage("counting")
        skipped = [f"group {gr.id}: " + ("; ".join(gr.reasons) if not gr.exact
                                         else "reaches a model input or output")
                   for gr in groups if gr.id not in sel and (
                       not gr.exact or (gr.touches_io and not args.allow_io))]
        summary = PruneSummary(
            args.model, args.ratio, len(groups),
            {gid: (groups[gid].size, len(kept)) for gid, kept in sel.items()},
            count_params(mod, args.entry), count_params(pruned, args.entry),
            count_macs(mod, args.entry), count_macs(pruned, args.entry), args.output or "",
            skipped)
        if args.output:
            progress.stage(f"writing {args.output}")
            Path(args.output).write_text(tvm.ir.save_json(pruned), encoding="utf-8")
    finally:
        progress.done()
    _emit(summary.render(args.format))
    if args.output:
        _note(f"wrote the pruned module to {args.output}")
    return 0


def _example_diagnostic(outcome: Any, lines: dict[str, list[str]]) -> Diagnostic:
    pos = outcome.example.pos
    if pos.file not in lines:
        try:
            lines[pos.file] = Path(pos.file).read_text().splitlines()
        except OSError:
            lines[pos.file] = []
    src = lines[pos.file]
    text = src[pos.line - 1] if 0 < pos.line <= len(src) else ""
    return Diagnostic(pos.file, pos.line, pos.col, f"example failed: {outcome.message}", text)


def cmd_check(args: argparse.Namespace) -> int:
    """Lint rule files (layered over the library) and run their example lines."""
    from .dsl.ruleset import compile_check, load_rules
    from .examples import ExampleOutcome, run_example
    from .lint import file_summaries

    files = [*args.rules, *args.files]
    builtin = not args.no_library
    packs = False if args.no_packs else None
    if not args.files and not builtin:
        _note("nothing to check: give rule files, or drop --no-library")
        return 2
    diags = compile_check(files, builtin=builtin, packs=packs)
    subject = (f"{len(args.files)} rule file(s)" if args.files else "the rule library")
    if diags:
        for d in diags:
            print(d.format())
        print(f"{len(diags)} error(s) in {subject}")
        return 1
    for summary in file_summaries(args.files):
        for line in summary.lines():
            print(line)
        for warning in summary.warnings:
            print(warning.format())
    if args.no_examples:
        print(f"{subject}: no errors (examples not run)")
        return 0
    rules = load_rules(*files, builtin=builtin, packs=packs)
    wanted = {str(Path(f).resolve()) for f in args.files}

    def mine(ex: Any) -> bool:
        return not wanted or str(Path(ex.pos.file).resolve()) in wanted

    examples = [ex for ex in rules.examples if mine(ex)]
    progress = Progress(args.quiet, stages=1)
    progress.stage("running examples")
    failed: list[ExampleOutcome | None] = []  # None: the example met a rule mistake
    # a rule mistake met while running an example (a tuple field of a tensor port) is
    # an error of the rule file; the other examples still run
    raised: list[Diagnostic] = []
    try:
        for i, ex in enumerate(examples):
            progress.items(i, len(examples), f"examples ({ex.op})")
            try:
                outcome = run_example(ex, rules)
            except RuleFileError as err:
                raised += [d for d in err.diagnostics if d not in raised]
                failed.append(None)
                continue
            if not outcome.ok:
                failed.append(outcome)
    finally:
        progress.done()
    lines: dict[str, list[str]] = {}
    for d in raised:
        print(d.format())
    for failure in failed:
        if failure is not None:
            print(_example_diagnostic(failure, lines).format())
    ok = len(examples) - len(failed)
    if failed:
        errors = len(raised) + sum(o is not None for o in failed)
        print(f"{errors} error(s) in {subject}: {len(failed)} example(s) failed, "
              f"{ok} passed")
        return 1
    print(f"{subject}: no errors; examples: {ok} passed")
    return 0


# --------------------------------------------------------------------------- parser


def _percent(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentage: '{text}'") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"percentage out of range 0-100: '{text}'")
    return value


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("msc_rules")
    except Exception:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `msc-rules`."""
    base = argparse.ArgumentParser(add_help=False)
    base.add_argument("--rules", metavar="FILE", action="append", default=[],
                      help="a rule file layered over the library (repeatable)")
    base.add_argument("--import", metavar="MODULE", action="append", default=[],
                      dest="imports",
                      help="import MODULE first, e.g. one that registers custom ops "
                           "(repeatable)")
    base.add_argument("--no-packs", action="store_true",
                      help="do not read the rule packs of installed packages "
                           "(also: MSC_RULES_PACKS=0)")
    base.add_argument("-q", "--quiet", action="store_true",
                      help="no progress display, even on a terminal")
    base.add_argument("--debug", action="store_true",
                      help="show a traceback on internal errors")
    common = argparse.ArgumentParser(add_help=False, parents=[base])
    common.add_argument("--entry", metavar="NAME", default="main",
                        help="the Relax function to start from (default: main)")

    model_help = ("a TVMScript .py, IRModule .json, .onnx or torch .pt2 file, or a bundled "
                  "example name (cnn, transformer)")
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Names and layouts for every tensor of a TVM Relax module, from rule files.",
        epilog="Run 'msc-rules COMMAND -h' for the options of a command.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    a = sub.add_parser("annotate", parents=[common], help="write Name/Layout markers",
                       description="Annotate a model (names, then layouts), print one row per "
                                   "tensor and, with -o, write the annotated module as JSON "
                                   "(load it with tvm.ir.load_json).")
    a.add_argument("model", nargs="?", metavar="MODEL",
                   help=model_help + "; default: the bundled cnn")
    a.add_argument("-o", "--output", metavar="OUT", help="write the annotated module here")
    a.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    a.add_argument("--strict", action="store_true",
                   help="fail when a binding is left without a layout "
                        "(SetExprLayout(allow_missing=False)) or a weight's layout is "
                        "guessed (initial letters, or derived only from them)")
    a.add_argument("--allow-guessed", action="store_true",
                   help="with --strict: accept weights with guessed layouts")
    a.set_defaults(func=cmd_annotate)

    c = sub.add_parser("coverage", parents=[common], help="what the rules decide",
                       description="Without MODEL: every registered relax op with its status "
                                   "(rule file:line and forward/backward equation counts, "
                                   "ignored with reason, or undecided) and whether TVM has a "
                                   "built-in FRelaxInferLayout. With MODEL: the ops it uses, "
                                   "bindings per op, ops without rules, tensors without a layout "
                                   "or with a guessed one, and conflicts.")
    c.add_argument("model", nargs="?", metavar="MODEL", help=model_help)
    c.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    c.add_argument("-o", "--output", metavar="FILE", help="write the report here")
    c.add_argument("--fail-under", type=_percent, metavar="PERCENT",
                   help="exit 1 when coverage is under PERCENT (library: ops ruled or "
                        "ignored; model: call bindings whose op is ruled or ignored) or, "
                        "for a model, when a weight's layout is guessed")
    c.add_argument("--allow-guessed", action="store_true",
                   help="with --fail-under: accept weights with guessed layouts")
    c.set_defaults(func=cmd_coverage)

    e = sub.add_parser("explain", parents=[common], help="why a tensor has its layout",
                       description="The chain of decisions that gave a tensor its layout (rule "
                                   "equation, where it is written, the call site, the neighbour "
                                   "tensors it read) back to a seed or fallback, and every "
                                   "conflict touching the tensor.")
    e.add_argument("model", metavar="MODEL", help=model_help)
    e.add_argument("tensor", metavar="TENSOR_NAME",
                   help="a Name marker (e.g. conv2d, conv2d.weight), a variable name, or "
                        "FUNCTION:VAR")
    e.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    e.add_argument("--tree", action="store_true",
                   help="explain every neighbour read, not only the one that came last")
    e.add_argument("--max-steps", type=int, default=0, metavar="N",
                   help="stop after N steps (default: no limit)")
    e.set_defaults(func=cmd_explain)

    g = sub.add_parser("graph", parents=[common], help="draw the dataflow graph",
                       description="The dataflow graph with names and layouts, coloured by "
                                   "layout, conflicts in red. .html is one self-contained page "
                                   "(pan, zoom, search; opens offline), .svg a picture, .dot "
                                   "Graphviz input.")
    g.add_argument("model", metavar="MODEL", help=model_help)
    g.add_argument("-o", "--output", metavar="FILE", required=True,
                   help="FILE.html, FILE.svg or FILE.dot")
    g.add_argument("--format", choices=("html", "svg", "dot"),
                   help="override the format the suffix implies")
    g.add_argument("--no-consts", action="store_true", help="leave constants (weights) out")
    g.add_argument("--title", help="the title (default: the model file name)")
    g.add_argument("--focus", metavar="NAME",
                   help="draw only the tensors around this one (a name as explain takes it)")
    g.add_argument("--depth", type=int, default=3, metavar="K",
                   help="with --focus: how many uses away from it to draw (default: 3)")
    g.add_argument("--max-nodes", type=int, default=_MAX_NODES, metavar="N",
                   help=f"past N tensors (default: {_MAX_NODES}; 0: no limit) draw repeated "
                        "blocks (layers) once, and refuse when that is still too many: a "
                        "browser shows a huge drawing as an almost empty page")
    g.add_argument("--no-collapse", action="store_true",
                   help="never collapse repeated blocks (past --max-nodes: refuse)")
    g.add_argument("--color-by", choices=("layout", "group"), default="layout",
                   help="colour tensors by layout (default) or by channel group")
    g.set_defaults(func=cmd_graph)

    ch = sub.add_parser("channels", parents=[common], help="list the channel groups",
                        description="The channel groups: the weight axes that must be pruned "
                                    "together (producers' output channels, follow params, "
                                    "consumers' input channels), each with its size, its "
                                    "unit (whole heads), whether it reaches a model input or "
                                    "output, and whether pruning it is exact (and why not).")
    ch.add_argument("model", metavar="MODEL", help=model_help)
    ch.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    ch.add_argument("-o", "--output", metavar="FILE", help="write the listing here")
    ch.set_defaults(func=cmd_channels)

    pr = sub.add_parser("prune", parents=[common], help="prune channels by weight magnitude",
                        description="Prune every exact channel group that stays inside the "
                                    "model: keep the channels whose producers' weights have "
                                    "the largest L1 norm; print parameters and MACs before "
                                    "and after; write the pruned module as JSON with -o.")
    pr.add_argument("model", metavar="MODEL", help=model_help)
    pr.add_argument("--ratio", type=float, default=0.5,
                    help="the share of each group's channels to remove (default 0.5)")
    pr.add_argument("-o", "--output", metavar="OUT", help="write the pruned module here")
    pr.add_argument("--allow-io", action="store_true",
                    help="also prune groups that reach a model input or output")
    pr.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    pr.set_defaults(func=cmd_prune)

    k = sub.add_parser("check", parents=[base], help="lint rule files and run their examples",
                       description="Parse and compile rule files layered over the library; print "
                                   "each problem as file:line:col: error: message with the line "
                                   "and a caret; then run the files' example lines. Without "
                                   "files, checks the library itself.")
    k.add_argument("files", nargs="*", metavar="RULES", help="rule files to check")
    k.add_argument("--no-examples", action="store_true", help="do not run example lines")
    k.add_argument("--no-library", action="store_true",
                   help="check the files alone, not layered over the library")
    k.set_defaults(func=cmd_check)
    return p


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run `msc-rules` with `argv` (default: sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else 2
    debug = bool(args.debug or os.environ.get("MSC_RULES_DEBUG"))
    try:
        _import_modules(args.imports)
        return int(args.func(args))
    except RuleFileError as err:
        _note(f"error: {len(err.diagnostics)} problem(s) in rule files")
        for d in err.diagnostics:
            sys.stderr.write(d.format() + "\n")
        return 1
    except MscRulesError as err:
        _note(f"error: {_one_line(err)}")
        return 1
    except BrokenPipeError:  # `msc-rules coverage | head`: stop quietly
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        _note(f"error: {where}{err.strerror or _one_line(err)}")
        return 1
    except KeyboardInterrupt:
        _note("interrupted")
        return 130
    except Exception as err:
        if debug:
            raise
        _note(f"internal error: {type(err).__name__}: {_one_line(err)[:500]} "
              "(rerun with --debug for a traceback)")
        return 3


__all__ = ["Progress", "build_parser", "main"]
