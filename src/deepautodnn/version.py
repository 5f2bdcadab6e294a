"""The package version, read from the installed metadata (pyproject.toml is the one place it is set)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deepautodnn")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
