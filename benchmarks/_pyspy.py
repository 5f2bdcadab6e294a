"""Sampling another process with py-spy while a benchmark loads it, and adding its samples up by
phase: which stack frames mark a phase is the benchmark's to say (`phases`)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

RATE_HZ = 500


@contextlib.contextmanager
def sampling(pid: int, out: Path):
    """py-spy samples `pid`'s threads (those it judges active) into `out`, collapsed stacks, until the
    block ends. Non-blocking: the process is never paused, so the load it serves is not slowed."""
    if shutil.which("py-spy") is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    command = ["py-spy", "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--nonblocking"]
    spy = subprocess.Popen(
        [*command, "--format", "raw", "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    time.sleep(0.5)
    if spy.poll() is not None:  # it could not attach (not root, ptrace_scope, another platform)
        raise SystemExit(f"py-spy could not sample process {pid}: {spy.stderr.read().decode().strip()}")
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
        try:
            spy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
    if not out.exists():
        raise SystemExit(f"py-spy wrote no samples of process {pid}: {spy.stderr.read().decode().strip()}")


def phases(raw: Path, rules: list[tuple[str, tuple[str, ...]]]) -> Counter:
    """Samples per phase. A stack (frames `function (file:line)`, outermost first) goes to the phase
    of its innermost frame that holds one of a rule's markers (the first such rule, in order); a
    stack no rule claims is "other"."""
    counts: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        counts[_phase(stack.split(";"), rules)] += int(n)
    return counts


def _phase(frames: list[str], rules: list[tuple[str, tuple[str, ...]]]) -> str:
    for frame in reversed(frames):
        for name, markers in rules:
            if any(m in frame for m in markers):
                return name
    return "other"
