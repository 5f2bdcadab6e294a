"""The output file of a catalogue run (`predict ... --out`): CSV, JSON Lines or Parquet, written as
batches finish and read back on a rerun to skip the files it already holds.

A batch of rows goes to the file in one write and is flushed, so a `kill -9` loses at most the
batch being written. CSV and JSON Lines are appended to in place; a rerun first cuts a torn last
line. Parquet cannot be appended to (its index is at the end of the file), so its rows go to a
JSON Lines journal beside it (`OUT.partial.jsonl`), and the Parquet file is rewritten from the
old file and the journal, through a temporary file and a rename, when the run ends or is
interrupted: `OUT` is always either absent, the previous complete file, or the new complete one.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from deepautodnn.errors import DeepAutoDNNError
from deepautodnn.utils.extras import require_extra
from deepautodnn.utils.files import atomic_write_json

COLUMNS = ("file", "label", "label_index", "probability", "unknown", "unknown_score", "top_k", "error")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
JOURNAL_SUFFIX = ".partial.jsonl"
PARQUET_ROWS_PER_GROUP = 8192  # rows per Parquet row group, and per batch read back


class CatalogueOutputError(DeepAutoDNNError, ValueError):
    """The --out file can't be used (unknown format, or not a catalogue output). Names the file."""


def output_format(path: str | os.PathLike) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise CatalogueOutputError(f"{path}: --out must end in .parquet, .csv or .jsonl")
    if fmt == "parquet":
        require_extra("catalogue", "writing Parquet")
    return fmt


def error_row(file: str, error: str) -> dict:
    return {
        "file": file,
        "label": None,
        "label_index": None,
        "probability": None,
        "unknown": None,
        "unknown_score": None,
        "top_k": [],
        "error": error,
    }


def result_row(record: dict) -> dict:
    """A `prediction_record` as an output row: the columns above, top-k as (label, probability)."""
    row = {k: record.get(k) for k in COLUMNS}
    row["top_k"] = [{"label": t["label"], "probability": t["probability"]} for t in record["top_k"]]
    return row


# ---- line formats: CSV and JSON Lines ------------------------------------------------------------


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line that a kill left without its newline (a batch is written in one go, so at
    most that one)."""
    with open(path, "rb+") as f:
        size = f.seek(0, io.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        block, end = 1 << 16, size
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                return
            end = start
        f.truncate(0)


class LineOutput:
    """Rows appended to a CSV or JSON Lines file, one write per batch."""

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt = path, fmt
        self.done: set[str] = set()
        if path.exists():
            if not path.is_file():
                raise CatalogueOutputError(f"{path}: exists and is not a file")
            _cut_torn_tail(path)
            self.done = self._files_in(path)
        new = not path.exists() or path.stat().st_size == 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "a", encoding="utf-8", newline="")
        if new and fmt == "csv":
            self._write_text(",".join(COLUMNS) + "\r\n")

    def _files_in(self, path: Path) -> set[str]:
        done = set()
        with open(path, encoding="utf-8", newline="") as f:
            if self.fmt == "csv":
                reader = csv.reader(f)
                header = next(reader, None)
                if header is not None and tuple(header) != COLUMNS:
                    raise CatalogueOutputError(
                        f"{path}: exists and is not a catalogue output (its header is not {','.join(COLUMNS)}); "
                        "choose another --out"
                    )
                done.update(row[0] for row in reader if row)
            else:
                for n, line in enumerate(f, 1):
                    try:
                        done.add(json.loads(line)["file"])
                    except (ValueError, KeyError, TypeError):
                        raise CatalogueOutputError(
                            f"{path}: line {n} is not a catalogue row; choose another --out"
                        ) from None
        return done

    def _write_text(self, text: str) -> None:
        self.handle.write(text)
        self.handle.flush()

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        buf = io.StringIO()
        if self.fmt == "csv":
            writer = csv.writer(buf)
            for r in rows:
                writer.writerow([_csv_cell(r[k]) for k in COLUMNS])
        else:
            for r in rows:
                buf.write(json.dumps(r, ensure_ascii=False) + "\n")
        self._write_text(buf.getvalue())

    def close(self) -> None:
        self.handle.close()


def _csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)
    return value


# ---- Parquet ------------------------------------------------------------------------------------


def parquet_schema(vectors: bool = False):
    """The rows' Arrow schema; `vectors` adds the search vectors of `deepautodnn embed`."""
    import pyarrow as pa

    top = pa.list_(pa.struct([("label", pa.string()), ("probability", pa.float64())]))
    fields = [
        ("file", pa.string()),
        ("label", pa.string()),
        ("label_index", pa.int32()),
        ("probability", pa.float64()),
        ("unknown", pa.bool_()),
        ("unknown_score", pa.float64()),
        ("top_k", top),
        ("error", pa.string()),
    ]
    if vectors:
        fields.append(("vector", pa.list_(pa.float32())))  # L2-normalised; null on an error row
    return pa.schema(fields)


IDENTITY_KEY = b"deepautodnn"  # Parquet schema metadata: what made the rows (the embedding's identity)
IDENTITY_SUFFIX = ".partial.identity.json"  # the same, beside the journal, until the Parquet file has it


class ParquetOutput:
    """Rows journaled as JSON Lines while the run goes; the Parquet file rewritten at `close`.

    With `identity` (a JSON-able dict saying which model made the rows), the file records it in its
    schema metadata, and an existing file or journal made by anything else is refused rather than
    mixed with new rows."""

    def __init__(self, path: Path, *, vectors: bool = False, identity: dict | None = None):
        import pyarrow.parquet as pq

        self.path = path
        self.schema = parquet_schema(vectors)
        self.identity = identity
        self.journal_path = path.with_name(path.name + JOURNAL_SUFFIX)
        self.identity_path = path.with_name(path.name + IDENTITY_SUFFIX)
        self.in_file: set[str] = set()  # files the Parquet file already holds
        if path.exists():
            try:
                parquet = pq.ParquetFile(path)
                self._check_identity(path, _identity_of(parquet.schema_arrow.metadata))
                for batch in parquet.iter_batches(columns=["file"], batch_size=PARQUET_ROWS_PER_GROUP):
                    self.in_file.update(batch.column(0).to_pylist())
            except CatalogueOutputError:
                raise
            except Exception as err:  # pyarrow's errors for a file that is not Parquet, or lacks the column
                raise CatalogueOutputError(
                    f"{path}: exists and is not a catalogue output ({type(err).__name__}: {err}); choose another --out"
                ) from None
        if self.journal_path.exists() and self.journal_path.stat().st_size > 0:
            self._check_identity(self.journal_path, self._journal_identity())
        if identity is not None:  # before the journal's first row, so that a row never lacks it
            atomic_write_json(self.identity_path, identity)
        else:
            self.identity_path.unlink(missing_ok=True)
        self.journal = LineOutput(self.journal_path, "jsonl")
        self.done = self.in_file | self.journal.done

    def _journal_identity(self) -> dict | None:
        """The identity recorded beside the journal (None: rows of `predict`)."""
        try:
            return json.loads(self.identity_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise CatalogueOutputError(
                f"{self.identity_path}: unreadable ({err}); delete it and {self.journal_path} to start again"
            ) from None

    def _check_identity(self, path: Path, recorded: dict | None) -> None:
        if recorded != self.identity:
            raise CatalogueOutputError(
                f"{path}: holds rows made by {_describe(recorded)}, not by {_describe(self.identity)}; "
                "choose another --out, or delete it to start again"
            )

    def write(self, rows: list[dict]) -> None:
        self.journal.write(rows)

    def close(self) -> None:
        """The old file's rows and the journal's, in one new Parquet file; the journal removed."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.journal.close()
        if self.journal_path.stat().st_size == 0 and self.path.exists():
            self._remove_journal()
            return
        schema = self.schema
        if self.identity is not None:
            schema = schema.with_metadata({IDENTITY_KEY: json.dumps(self.identity, sort_keys=True)})
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with pq.ParquetWriter(tmp, schema) as writer:
            if self.path.exists():
                for batch in pq.ParquetFile(self.path).iter_batches(batch_size=PARQUET_ROWS_PER_GROUP):
                    writer.write_batch(batch.cast(schema) if batch.schema != schema else batch)
            rows = []
            with open(self.journal_path, encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    # A kill between the rename below and the journal's removal leaves both: once is enough.
                    if row["file"] not in self.in_file:
                        rows.append(row)
                    if len(rows) == PARQUET_ROWS_PER_GROUP:
                        writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                        rows = []
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        os.replace(tmp, self.path)
        self._remove_journal()

    def _remove_journal(self) -> None:
        self.journal_path.unlink()
        self.identity_path.unlink(missing_ok=True)


def _identity_of(metadata: dict | None) -> dict | None:
    raw = (metadata or {}).get(IDENTITY_KEY)
    return None if raw is None else json.loads(raw)


def _describe(identity: dict | None) -> str:
    if identity is None:
        return "`deepautodnn predict` (no embedding)"
    return ", ".join(f"{k} {str(v)[:16]}" for k, v in sorted(identity.items()))


def read_identity(path: str | os.PathLike) -> dict | None:
    """The identity a Parquet output records (None for `predict`'s)."""
    import pyarrow.parquet as pq

    return _identity_of(pq.read_schema(path).metadata)


def open_output(path: str | os.PathLike, *, identity: dict | None = None) -> LineOutput | ParquetOutput:
    """The output for `path` by its suffix, with `.done` = the files it already holds. With
    `identity` (an embedding's), it must be Parquet, and the rows carry a `vector` column."""
    path = Path(path)
    fmt = output_format(path)
    if identity is not None:
        if fmt != "parquet":
            raise CatalogueOutputError(f"{path}: vectors go to a Parquet file; --out must end in .parquet")
        return ParquetOutput(path, vectors=True, identity=identity)
    return ParquetOutput(path) if fmt == "parquet" else LineOutput(path, fmt)


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Every row of a catalogue output, for tests and small catalogues (it holds them all)."""
    path = Path(path)
    fmt = output_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8", newline="") as f:
        if fmt == "jsonl":
            return [json.loads(line) for line in f]
        return [_parse_csv_row(r) for r in csv.DictReader(f)]


def _parse_csv_row(r: dict) -> dict:
    def num(v, kind):
        return None if v == "" else kind(v)

    return {
        "file": r["file"],
        "label": r["label"] or None,
        "label_index": num(r["label_index"], int),
        "probability": num(r["probability"], float),
        "unknown": None if r["unknown"] == "" else r["unknown"] == "true",
        "unknown_score": num(r["unknown_score"], float),
        "top_k": json.loads(r["top_k"]) if r["top_k"] else [],
        "error": r["error"] or None,
    }
