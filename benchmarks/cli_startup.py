"""How long `deepautodnn --help` and `import deepautodnn` take, and their peak memory.

Each command runs in a fresh interpreter, `--repeats` times; the median wall time and the median
peak RSS (from the child's rusage) are reported. `--src` times another source tree with the same
interpreter (e.g. a checkout of an older commit); `--compare SRC` measures both, the installed
package first, and writes both into one file.

    git worktree add /tmp/before 5ccbdc0
    python benchmarks/cli_startup.py --compare /tmp/before/src --out results/cli_startup_cpu.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from _emit import emit_json

SCRIPT = str(Path(sys.executable).with_name("deepautodnn"))  # the console script beside this interpreter
COMMANDS = {  # name: the command line
    "deepautodnn --help": [SCRIPT, "--help"],
    "python -m deepautodnn --help": [sys.executable, "-m", "deepautodnn", "--help"],
    "import deepautodnn": [sys.executable, "-c", "import deepautodnn"],
}


def measure(args: list[str], env: dict, repeats: int) -> dict:
    seconds, rss_mib = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage
        seconds.append(time.perf_counter() - start)
        if status != 0:
            raise SystemExit(f"{args} failed with status {status}")
        rss_mib.append(usage.ru_maxrss / 1024)  # KiB on Linux
    # Every module the command imports, as Python's own import profiler lists them.
    profiled = subprocess.run(args, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, capture_output=True, text=True)
    modules = {
        line.rsplit("|", 1)[-1].strip() for line in profiled.stderr.splitlines() if line.startswith("import time:")
    }
    return {
        "median_seconds": round(statistics.median(seconds), 4),
        "seconds": [round(s, 4) for s in seconds],
        "median_peak_rss_mib": round(statistics.median(rss_mib), 1),
        "imports_torch": "torch" in modules,
        "modules_imported": len(modules),
    }


def git_commit(folder) -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=folder)
    return proc.stdout.strip()


def measure_tree(src: str | None, repeats: int) -> dict:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = str(Path(src).resolve())
    return {
        "src": str(Path(src).resolve()) if src else "installed package",
        "commit": git_commit(src or Path(__file__).parent),
        "results": {name: measure(cmd, env, repeats) for name, cmd in COMMANDS.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--src", help="source tree to put first on PYTHONPATH (default: the installed package)")
    parser.add_argument("--compare", metavar="SRC", help="also measure this source tree, after the first")
    parser.add_argument("--out")
    args = parser.parse_args()
    # Measured first, from a parent that has not loaded torch: a child's peak RSS counts the pages
    # it shares with its parent until exec, so a heavy parent would inflate every figure.
    measured = measure_tree(args.src, args.repeats)
    compared = measure_tree(args.compare, args.repeats) if args.compare else None
    from deepautodnn.utils.runtime import machine_info

    result = {
        "benchmark": "cli_startup",
        "command": "python " + " ".join(sys.argv),
        "commit": measured["commit"],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "repeats": args.repeats,
        "results": measured["results"],
        "compared_with": compared,
    }
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
