"""Write results/provenance.json: for every results file, its command, commit, date, machine and
seeds, read from the file itself where it records them, and otherwise from git and from the
commands that results/README.md gives for files made before they recorded everything.

A file that records a field keeps it as it is. For one that does not, `commit` and `date` are
those of the commit that last wrote the file (`committed_in`): the commit it ran at was not
recorded, and can only be that one or an earlier one. `tests/test_results_files.py` fails when this
file differs from what the script writes now, so run it after committing a results file:

    python scripts/results_provenance.py [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from deepautodnn.utils.runtime import recorded_cpu_class

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
OUT = RESULTS / "provenance.json"

# Manifests list files and hold no figures; ablation rows and run configs belong to their folder's
# main file (ablation.json, metrics.json).
SKIP = {
    "headline.json",
    "serve_load.json",
    "reliability.json",
    "speed_by_cpu.json",
    "catalogue.json",
    "serve_ops.json",
    "preset_recipes.json",
    "provenance.json",
    "recipe_trials.json",  # validation trials, each with its own command and commit
    "config.json",
}

# Commands of files that do not record one, as results/README.md gives them.
COMMANDS = {
    "results/baselines/": "python benchmarks/baselines_time.py --out /tmp/blfull/baselines --json-out /tmp/blfull/baselines_time_cpu.json",
    "results/ablation_fast_h200/": "deepautodnn ablate --device cuda --seeds S --out DIR, S = 0, 1, 2 (benchmarks/gpu_session.sh as committed in 49c5a10)",
    "results/paper_full_seed0_h200/": "deepautodnn train --preset paper --device cuda --seed 0 (benchmarks/gpu_session.sh as committed in 49c5a10)",
    "results/paper_dnn10_seed0/": "deepautodnn train --preset paper --dnn-epochs 10 --seed 0 --out /tmp/runs/paper-dnn10 --quiet",
    "results/fast_seed0/": "python benchmarks/fast_preset.py --seeds 0 1 2 --runs /tmp/bench-fast3 --out results/fast_preset_cpu.json (seed 0)",
    "results/onnx_export_fast_seed0.json": "deepautodnn export /tmp/mfast",
}
# Seeds of files that draw at random without recording it: the script's default seed.
SEEDS = {"results/kill_resume_cpu.json": 0}
# Machines of files that do not record one (results/README.md: all on the project's machine).
MACHINES = {
    "results/onnx_export_fast_seed0.json": "avx512-bf16",
    "results/fuzz_cpu.json": "avx512-bf16",
    "results/paper_dnn10_seed0/": "avx512-bf16",
}


def results_files() -> list[Path]:
    return sorted(p for p in RESULTS.rglob("*.json") if p.name not in SKIP and "rows" not in p.parts)


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def _lookup(table: dict, rel: str):
    return next((v for k, v in table.items() if rel == k or (k.endswith("/") and rel.startswith(k))), None)


def machine_class(record: dict, rel: str) -> str | None:
    machine = record.get("machine") or {}
    if machine.get("cuda"):
        return f"GPU {machine['cuda']}"
    return recorded_cpu_class(machine) or _lookup(MACHINES, rel)


def _nested_seeds(value):
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "seed" and isinstance(inner, int):
                yield inner
            else:
                yield from _nested_seeds(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _nested_seeds(inner)


def seeds_of(record: dict, rel: str):
    for key in ("seeds", "seed"):
        if key in record:
            return record[key]
    summary = record.get("summary")
    if isinstance(summary, list) and summary:
        return sorted({s for row in summary for s in row.get("seeds", [])})
    nested = sorted(set(_nested_seeds(record)))
    if nested:
        return nested
    if rel in SEEDS:
        return SEEDS[rel]
    seed = re.search(r"seed(\d+)", rel)  # a figure of the seed-N model
    return int(seed.group(1)) if seed else "none: a speed figure, which depends on no seed"


def entry(path: Path) -> dict:
    rel = str(path.relative_to(ROOT))
    record = json.loads(path.read_text())
    record = record if isinstance(record, dict) else {}
    record = record | (record.get("provenance") or {})  # ablation.json before it was flattened
    committed_in = _git("log", "-1", "--format=%h %cs", "--", rel).split()
    out = {
        "command": record.get("command") or _lookup(COMMANDS, rel),
        "commit": record.get("commit") or (committed_in[0] if committed_in else None),
        "date": record.get("date") or (committed_in[1] if committed_in else None),
        "machine": machine_class(record, rel),
        "seeds": seeds_of(record, rel),
    }
    recorded = [k for k in ("commit", "date") if record.get(k)]
    out["recorded_in_file"] = ["command", *recorded] if record.get("command") else recorded
    if not record.get("commit") and committed_in:
        out["commit_is"] = "the commit that last wrote this file; the commit it ran at was not recorded"
    return out


def provenance() -> dict:
    return {
        "about": __doc__.split("\n\n")[0].replace("\n", " "),
        "files": {str(p.relative_to(ROOT)): entry(p) for p in results_files()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date; change nothing")
    args = parser.parse_args()
    text = json.dumps(provenance(), indent=2) + "\n"
    if args.check:
        stale = not OUT.exists() or json.loads(OUT.read_text()) != json.loads(text)
        print("results/provenance.json: " + ("stale; run scripts/results_provenance.py" if stale else "current"))
        return int(stale)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
