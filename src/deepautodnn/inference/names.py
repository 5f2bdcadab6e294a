"""Names of the inference backends and of the files they read in a model directory.

Kept free of heavy imports so that the command line can offer them without loading torch.
"""

from __future__ import annotations

ONNX_FILE = "model.onnx"


BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8")


INT8_ONNX_FILE = "model.int8.onnx"


BACKEND_FILE = "backend.json"  # written by `deepautodnn export`: what each backend measured, which won
