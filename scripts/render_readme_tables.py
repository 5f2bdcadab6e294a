"""Render the README's generated tables from the JSON in results/, in place.

A generated block in README.md sits between two markers that name its source:

    <!-- begin generated: results/ood_fast_seed0_cpu.json -->
    ...
    <!-- end generated -->

and is replaced by the Markdown that `deepautodnn.ood_report` renders from that file (the photo
variants' accuracy table for a `photo_variants` file). `--check` only reports a stale block (and
exits 1), which is what the test suite runs.

    python scripts/render_readme_tables.py [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- begin generated: (?P<src>[^ ]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def cli_startup_markdown(result: dict) -> str:
    """`benchmarks/cli_startup.py`: this commit against the one it was compared with, per command."""
    machine = result["machine"]
    cpu = f"{machine['cpu']}, {'AVX-512 BF16' if machine['cpu_bf16'] else machine['cpu_capability']}"
    before = result["compared_with"]
    lines = [
        f"| command | {before['commit']}: seconds | MiB | torch | {result['commit']}: seconds | MiB | torch |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for name, now in result["results"].items():
        old = before["results"][name]
        lines.append(
            f"| `{name}` | {old['median_seconds']:.2f} | {old['median_peak_rss_mib']:.0f} | "
            f"{'yes' if old['imports_torch'] else 'no'} | {now['median_seconds']:.2f} | "
            f"{now['median_peak_rss_mib']:.0f} | {'yes' if now['imports_torch'] else 'no'} |"
        )
    lines.append(
        f"\nMedians of {result['repeats']} fresh processes each (wall time, peak RSS); {cpu}; `{result['command']}`.\n"
    )
    return "\n".join(lines) + "\n"


def render(source: str) -> str:
    from deepautodnn.experiments.ood_report import ood_markdown, variants_markdown

    result = json.loads((ROOT / source).read_text())
    renderers = {"ood": ood_markdown, "photo_variants": variants_markdown, "cli_startup": cli_startup_markdown}
    return renderers[result["benchmark"]](result)


def rendered_readme(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("src")) + m.group(4), text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a block is stale; change nothing")
    args = parser.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = rendered_readme(text)
    if args.check:
        stale = new != text
        print(
            "README.md: generated tables are " + ("stale; run scripts/render_readme_tables.py" if stale else "current")
        )
        return int(stale)
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
