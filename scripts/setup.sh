#!/usr/bin/env bash
# Install everything deepautodnn needs on a fresh Debian/Ubuntu machine, idempotently:
#   - the Fashion-MNIST IDX files (Debian package dataset-fashion-mnist), when apt is available;
#   - chromium and chromium-driver, for the web page's browser test (SKIP_BROWSER=1 skips them);
#   - a virtual environment in .venv with PyTorch and deepautodnn (editable) and its test tools.
# Override the PyTorch requirement with TORCH_SPEC (default: the CPU build torch==2.13.0).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: the dataset (needed), and chromium with its driver for the web page's browser
# test (wanted: without them that test is skipped and says why).
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if command -v apt-get >/dev/null; then
  updated=0
  if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    echo "setup: installing dataset-fashion-mnist with apt-get" >&2
    as_root apt-get update -qq && updated=1
    apt_install dataset-fashion-mnist
  fi
  if [ "${SKIP_BROWSER:-0}" != 1 ] && ! { command -v chromium && command -v chromedriver; } >/dev/null; then
    echo "setup: installing chromium and chromium-driver with apt-get (SKIP_BROWSER=1 skips this)" >&2
    [ "$updated" = 1 ] || as_root apt-get update -qq || true
    apt_install chromium chromium-driver || echo "setup: could not install chromium; the browser test will be skipped" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv || { echo "setup: python3 -m venv failed; on Debian run: apt-get install python3-venv" >&2; exit 1; }
fi
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev]"  # [dev] includes [all]: serve, onnx, report
echo "setup: done; run commands as .venv/bin/deepautodnn or activate with: source .venv/bin/activate" >&2
