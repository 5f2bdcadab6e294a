"""The image files of a catalogue, named one at a time so that memory does not grow with it.

A SOURCE is a folder (every image file below it, folders in name order), a glob pattern
(`shop/**/*.jpg`; `**` spans folders), a manifest (a `.txt` or `.lst` file with one path per
line, or a `.csv` whose `path` or `file` column, else first column, names them; relative paths
are relative to the manifest's folder), or one image file. A path that names nothing is passed
on as it is, and becomes a row with its error.
"""

from __future__ import annotations

import csv
import glob
import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from deepautodnn.inference.predict import IMAGE_SUFFIXES

MANIFEST_SUFFIXES = {".txt", ".lst", ".csv"}
GLOB_CHARS = set("*?[")


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def walk_images(folder: Path) -> Iterator[str]:
    """Image files under `folder`, depth first, names sorted within each folder."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if is_image_name(name):
                yield os.path.join(root, name)


def manifest_paths(manifest: Path) -> Iterator[str]:
    base = manifest.parent
    with open(manifest, encoding="utf-8", newline="") as f:
        if manifest.suffix.lower() == ".csv":
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return
            lowered = [h.strip().lower() for h in header]
            named = [lowered.index(c) for c in ("path", "file") if c in lowered]
            column = named[0] if named else 0
            for row in (
                reader if named else itertools.chain([header], reader)
            ):  # no header row: the first row names a file too
                if len(row) > column and row[column].strip():
                    yield str(base / row[column].strip())
        else:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield str(base / line)


def catalogue_paths(sources: Iterable[str | os.PathLike]) -> Iterator[str]:
    """Every image path the SOURCEs name, in order, each once per SOURCE that names it."""
    for source in map(str, sources):
        path = Path(source)
        if path.is_dir():
            yield from walk_images(path)
        elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            yield from manifest_paths(path)
        elif not path.exists() and GLOB_CHARS & set(source):
            yield from (p for p in glob.iglob(source, recursive=True) if os.path.isfile(p) and is_image_name(p))
        else:
            yield source
