"""Names of the inference backends and of the files they read in a model directory, and the
choices of similar-item search.

Kept free of heavy imports so that the command line can offer them without loading torch.
"""

from __future__ import annotations

from deepautodnn.config import EMBEDDING_SPACES

BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8")  # float32 and bf16 PyTorch; float32 and int8 ONNX Runtime

ONNX_FILE = "model.onnx"  # written by `deepautodnn export`
INT8_ONNX_FILE = "model.int8.onnx"  # likewise, where int8 holds accuracy on this CPU
BACKEND_FILE = "backend.json"  # written by `deepautodnn export`: what each backend measured, which won

# The space `embed` and `similar` use unless told: the one with the higher precision@10 in the
# retrieval benchmark (results/retrieval_*.json; tests/inference/test_search.py holds them equal).
DEFAULT_SPACE = "penultimate"
assert DEFAULT_SPACE in EMBEDDING_SPACES
INDEX_KINDS = ("auto", "exact", "ivf")  # see inference.vector_index
# Exact search reads every vector for each query: about 1 ms per 20,000 vectors of 256 dimensions on
# 2 cores (results/retrieval_*.json, exact latency by size). Above this, `auto` builds IVF, which
# answers in a fraction of a millisecond at recall@10 >= TARGET_RECALL.
EXACT_BELOW = 20_000
TARGET_RECALL = 0.95  # of the exact top 10, for the approximate index's nprobe
