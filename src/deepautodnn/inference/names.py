"""Names of the inference backends and of the files they read in a model directory.

Kept free of heavy imports so that the command line can offer them without loading torch.
"""

from __future__ import annotations

BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8")  # float32 and bf16 PyTorch; float32 and int8 ONNX Runtime

ONNX_FILE = "model.onnx"  # written by `deepautodnn export`
INT8_ONNX_FILE = "model.int8.onnx"  # likewise, where int8 holds accuracy on this CPU
BACKEND_FILE = "backend.json"  # written by `deepautodnn export`: what each backend measured, which won
