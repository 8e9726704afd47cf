"""The progress line (msc_rules/progress.py): a bar with the stage counter, counts and a
clock on a terminal, nothing on a file or pipe or with --quiet; checked on string
streams that claim to be terminals and on a real pseudo-terminal."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

from msc_rules.progress import Progress, count_bindings

REPO = Path(__file__).resolve().parents[1]


class Tty(io.StringIO):
    """A string stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _frames(text: str) -> list[str]:
    return [f for f in text.split("\r\033[K") if f]


def test_stages_counts_and_items_on_a_terminal() -> None:
    tty = Tty()
    p = Progress(stream=tty, stages=2)
    p.stage("loading big.json")
    p.measure("20,007 bindings")
    p.stage("running examples")
    p.items(9, 10, "examples")  # the last items are always drawn (others: 20 a second)
    p.done()
    frames = _frames(tty.getvalue())
    assert frames[0] == "[....................] 1/2 loading big.json · 0:00"
    assert frames[1] == "[....................] 1/2 loading big.json · 20,007 bindings · 0:00"
    assert "[##########..........] 2/2 running examples · 20,007 bindings · 0:00" in frames
    assert ("[##################..] 9/10 examples · running examples · 20,007 bindings · 0:00"
            in frames)
    assert tty.getvalue().endswith("\r\033[K")  # the line is erased at the end


def test_more_stages_than_expected_grow_the_counter() -> None:
    tty = Tty()
    p = Progress(stream=tty, stages=1)
    p.stage("one")
    p.stage("two")
    p.done()
    assert "[##########..........] 2/2 two · 0:00" in _frames(tty.getvalue())


def test_nothing_on_a_pipe_or_when_quiet() -> None:
    pipe, quiet = io.StringIO(), Tty()
    for p in (Progress(stream=pipe), Progress(quiet=True, stream=quiet)):
        p.stage("loading")
        p.measure("3 bindings")
        p.items(1, 2, "examples")
        p.done()
        assert not p.enabled
    assert pipe.getvalue() == "" and quiet.getvalue() == ""


def test_the_clock_moves_during_a_silent_stage() -> None:
    tty = Tty()
    p = Progress(stream=tty)
    p.stage("inferring layouts")
    first = len(_frames(tty.getvalue()))
    deadline = time.monotonic() + 30  # generous: the machine may be busy
    while len(_frames(tty.getvalue())) <= first and time.monotonic() < deadline:
        time.sleep(0.05)
    p.done()
    frames = _frames(tty.getvalue())
    assert len(frames) > first
    assert all(f.startswith("[....................] 1/1 inferring layouts · 0:0") for f in frames)
    after = tty.getvalue()
    time.sleep(0.5)
    assert tty.getvalue() == after  # done() stopped the redraws


def test_count_bindings() -> None:
    from msc_rules.models import load_model

    mod = load_model("cnn")
    assert count_bindings(mod) == sum(len(b.bindings) for b in mod["main"].body.blocks) > 10


def _on_a_pty(*args: str) -> tuple[int, str, str]:
    """`python -m msc_rules ARGS` with stderr on a pseudo-terminal: (status, stdout, the
    terminal's text)."""
    master, slave = pty.openpty()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.Popen([sys.executable, "-m", "msc_rules", *args], stdout=subprocess.PIPE,
                            stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read().decode() if proc.stdout else ""
    proc.wait(timeout=300)
    os.close(master)
    return proc.returncode, out, b"".join(chunks).decode()


def test_the_command_shows_progress_on_a_terminal_only() -> None:
    rc, out, term = _on_a_pty("annotate", "cnn", "--format", "json")
    assert rc == 0 and out.startswith("{")
    frames = _frames(term.replace("\r\n", "\n").split("msc-rules: ")[0])
    assert frames[0].startswith("[....................] 1/5 loading cnn")
    assert any("bindings" in f and "4/5 inferring layouts" in f for f in frames), frames
    assert frames[-1].startswith("[################....] 5/5 writing layouts"), frames
    assert "\r\033[K" in term
    rc, out, term = _on_a_pty("annotate", "cnn", "--format", "json", "--quiet")
    assert rc == 0 and out.startswith("{")
    assert "\033[K" not in term and "1/2" not in term
