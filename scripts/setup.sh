#!/usr/bin/env bash
# Install everything deepautodnn needs on a fresh Debian/Ubuntu machine, idempotently:
#   - the Fashion-MNIST IDX files (Debian package dataset-fashion-mnist), when apt is available;
#   - chromium and chromium-driver, for the web page's browser test (SKIP_BROWSER=1 skips them);
#   - a virtual environment in .venv with PyTorch and deepautodnn (editable) and its test tools.
# Override the PyTorch requirement with TORCH_SPEC (default: the CPU build torch==2.13.0).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: the dataset, and (for the web page's browser test) chromium with its driver.
missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
[ "${SKIP_BROWSER:-0}" = 1 ] || { command -v chromium >/dev/null && command -v chromedriver >/dev/null; } \
  || missing+=(chromium chromium-driver)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing ${missing[*]} with apt-get" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || echo "setup: could not install ${missing[*]}; tests that need them will say so" >&2
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv || { echo "setup: python3 -m venv failed; on Debian run: apt-get install python3-venv" >&2; exit 1; }
fi
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev]"
echo "setup: done; run commands as .venv/bin/deepautodnn or activate with: source .venv/bin/activate" >&2
