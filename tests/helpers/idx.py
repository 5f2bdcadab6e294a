"""The suite's own IDX writer, independent of the reader under test (conftest and the fuzz worker share it)."""

from __future__ import annotations

import struct

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as IDX (the test-side writer, independent of the reader under test)."""
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
    code = codes[array.dtype.type]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()
