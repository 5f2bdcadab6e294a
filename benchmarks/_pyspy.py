"""Sampling another process with py-spy while a benchmark loads it, and adding its samples up by
phase: which stack frames mark a phase is the benchmark's to say (`phases`)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

RATE_HZ = 500


@contextlib.contextmanager
def sampling(pid: int, out: Path):
    """py-spy samples `pid`'s threads (those not idle) into `out`, collapsed stacks, until the block
    ends. Non-blocking: the process is never paused, so the load it serves is not slowed."""
    if shutil.which("py-spy") is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    command = ["py-spy", "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--nonblocking"]
    spy = subprocess.Popen([*command, "--format", "raw", "--output", str(out)], stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
        spy.wait(timeout=60)


def phases(raw: Path, rules: list[tuple[str, tuple[str, ...]]]) -> Counter:
    """Samples per phase. Each stack goes to the first rule, in order, one of whose markers occurs in
    any of its frames (a frame reads `function (file:line)`); stacks no rule claims are "other"."""
    counts: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        phase = next((name for name, markers in rules if any(m in stack for m in markers)), "other")
        counts[phase] += int(n)
    return counts
