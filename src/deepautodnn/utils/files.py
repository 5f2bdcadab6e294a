"""Files written atomically and read back verified: JSON, text, bytes and their SHA-256.

Every file is written to a temporary file in the same folder and then renamed over the target, so
a crash or a full disk never leaves a half-written file behind. A file F with a checksum gets
`F.sha256` beside it (`sha256sum` format, so `sha256sum -c` checks it by hand).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from deepautodnn.errors import ModelFileError, WriteError

CHECKSUM_SUFFIX = ".sha256"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that `path` holds either its old bytes or all the new ones.

    Raises WriteError naming the file when the disk is full or the folder can't be written.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise WriteError(err.errno, err.strerror or str(err), str(path)) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


MAX_JSON_BYTES = 64 * 2**20  # far above any config, metrics or record this package writes


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object from `path`; anything else (missing, huge, not JSON, not an object) is a
    ModelFileError naming the file."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ModelFileError(f"{path}: over {MAX_JSON_BYTES // 2**20} MiB, too large for a JSON record")
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a folder, not a file") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise ModelFileError(f"{path}: not readable JSON ({str(err)[:200]})") from None
    if not isinstance(value, dict):
        raise ModelFileError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_with_checksum(path: str | os.PathLike, data: bytes) -> str:
    """Write `data` atomically, then its SHA-256 to `path.sha256`; returns the digest."""
    path = Path(path)
    digest = sha256_hex(data)
    atomic_write_bytes(path, data)
    atomic_write_text(path.with_name(path.name + CHECKSUM_SUFFIX), f"{digest}  {path.name}\n")
    return digest


def recorded_checksum(path: str | os.PathLike) -> str | None:
    """The digest in `path.sha256`, or None when there is none."""
    path = Path(path)
    sidecar = path.with_name(path.name + CHECKSUM_SUFFIX)
    try:
        text = sidecar.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{sidecar}: cannot read the checksum ({err})") from None
    digest = text.split(maxsplit=1)[0].lower() if text.strip() else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ModelFileError(f"{sidecar}: not a SHA-256 checksum")
    return digest


def read_verified(
    path: str | os.PathLike, *, required: bool = True, max_bytes: int | None = None, digest: str | None = None
) -> bytes:
    """The bytes of `path`, checked against `digest` when given, else against `path.sha256`
    (which must exist when `required`)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        expected = digest or recorded_checksum(path)
        if expected is None and required:
            raise ModelFileError(
                f"{path}: no {path.name}{CHECKSUM_SUFFIX} beside it, so it can't be verified; "
                "it was not written by this version of deepautodnn, or its checksum was lost"
            )
        if max_bytes is not None and size > max_bytes:
            raise ModelFileError(
                f"{path}: {size} bytes is more than the {max_bytes} its config needs; "
                "the file does not belong to this config"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a folder, not a file") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read ({err.strerror or err})") from None
    if expected is not None and sha256_hex(data) != expected:
        where = "the recorded one" if digest else f"{path.name}{CHECKSUM_SUFFIX}"
        raise ModelFileError(
            f"{path}: SHA-256 does not match {where}; the file was changed, truncated or "
            "damaged after it was written. Restore it or train again"
        )
    return data
