"""Running a saved model: PyTorch (float32 or bf16) or ONNX Runtime (float32 or int8), one interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deepautodnn.inference.graph import OUTPUT_FIELDS, GraphOutputs, InferenceGraph, load_graph
from deepautodnn.inference.names import BACKEND_FILE, BACKENDS, INT8_ONNX_FILE, ONNX_FILE
from deepautodnn.models.pretrained import resolve_model_dir
from deepautodnn.utils.extras import missing_extra


def model_input(images_u8: np.ndarray) -> np.ndarray:
    """What every graph here takes: (N, H, W) uint8 -> (N, 1, H, W) float32 in [0, 1]."""
    return (images_u8.astype(np.float32) / 255.0)[:, None]


def _as_array(output) -> np.ndarray | None:
    """One graph output as float32; images (N, 1, H, W) lose their channel axis."""
    if output is None:
        return None
    a = output.float().numpy() if isinstance(output, torch.Tensor) else np.asarray(output, np.float32)
    return a[:, 0] if a.ndim == 4 else a


def _as_numpy(outputs) -> GraphOutputs:
    """Positional graph outputs (proba, recon, logits, features, embedding; a prefix of them) as arrays."""
    return GraphOutputs(*map(_as_array, outputs))


class TorchBackend:
    """Eager PyTorch, float32, or bf16 autocast with channels_last where the CPU has AVX512-BF16."""

    def __init__(self, graph: torch.nn.Module, bf16: bool = False):
        from deepautodnn.utils.runtime import bf16_supported

        self.bf16 = bf16
        if bf16 and not bf16_supported(torch.device("cpu")):
            raise ValueError("backend torch-bf16 needs a CPU with AVX512-BF16 or AMX; use torch or onnx")
        self.name = "torch-bf16" if bf16 else "torch"
        self.graph = graph.eval()
        if bf16:
            self.graph = self.graph.to(memory_format=torch.channels_last)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, bf16: bool = False) -> TorchBackend:
        return cls(load_graph(model_dir), bf16)

    @torch.inference_mode()
    def run(self, images_u8: np.ndarray, reconstruction: bool = True, embedding: str | None = None) -> GraphOutputs:
        """The graph on uint8 images (N, H, W); `reconstruction=False` skips the autoencoder's
        picture (recon is None) where the graph can; `embedding` adds the search vectors."""
        x = torch.from_numpy(model_input(images_u8))  # (N, 1, H, W)
        kwargs = {} if reconstruction or not isinstance(self.graph, InferenceGraph) else {"reconstruction": False}
        if embedding is not None:
            kwargs["embedding"] = embedding
        if not self.bf16:
            outputs = self.graph(x, **kwargs)
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                outputs = self.graph(x.contiguous(memory_format=torch.channels_last), **kwargs)
        return _as_numpy(outputs if isinstance(outputs, tuple) else (outputs,))


class OnnxBackend:
    """ONNX Runtime on the CPU, from an exported float32 or int8 file."""

    # ORT's threads spin after a run, waiting for the next one: what follows a run here (the
    # unknown-input detector's arithmetic in torch, the HTTP answer) then fights them for the
    # cores. They spin during a run only (benchmarks/ort_spinning.py measures the trade).
    SESSION_CONFIG = {"session.force_spinning_stop": "1"}

    def __init__(self, onnx_path: str | Path, name: str = "onnx", threads: int | None = None):
        try:
            import onnxruntime  # noqa: F401  (here, so that a missing extra is named before anything else)
        except ModuleNotFoundError:
            raise missing_extra("onnx", f"the {name} backend", "onnxruntime") from None

        from deepautodnn.errors import ModelFileError
        from deepautodnn.utils.files import read_verified

        path = Path(onnx_path)
        self.name = name
        if not path.exists():
            raise ModelFileError(f"{path}: no ONNX file (make one with `deepautodnn export MODEL_DIR`)")
        self.graph = read_verified(path)  # the bytes `export` wrote, by their .sha256; ORT parses these bytes
        self.threads = threads or torch.get_num_threads()
        try:
            self.session = self._session(self.graph)
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelFileError(f"{path}: not a usable ONNX model ({err})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._without_reconstruction = None  # (session, its output names), made when first asked for

    def _session(self, graph: bytes):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        for key, value in self.SESSION_CONFIG.items():
            options.add_session_config_entry(key, value)
        return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def _session_without_reconstruction(self):
        """ONNX Runtime runs every node of a graph whatever outputs are asked for, so skipping the
        reconstruction takes a graph cut down to the other outputs (onnx's Extractor)."""
        if self._without_reconstruction is None:
            import onnx
            from onnx.utils import Extractor

            outputs = [n for n in self.output_names if n != "reconstruction"]
            cut = Extractor(onnx.load_model_from_string(self.graph)).extract_model([self.input_name], outputs)
            self._without_reconstruction = (self._session(cut.SerializeToString()), outputs)
        return self._without_reconstruction

    def run(self, images_u8: np.ndarray, reconstruction: bool = True) -> GraphOutputs:
        """The graph on uint8 images (N, H, W); `reconstruction=False` skips the reconstruction."""
        skip = not reconstruction and "reconstruction" in self.output_names
        session, names = self._session_without_reconstruction() if skip else (self.session, self.output_names)
        arrays = session.run(None, {self.input_name: model_input(images_u8)})
        if not set(names) <= set(OUTPUT_FIELDS):  # a graph of other names: take its outputs in order
            return _as_numpy(arrays)
        return GraphOutputs(**{OUTPUT_FIELDS[n]: _as_array(a) for n, a in zip(names, arrays)})


# What a backend's speed and accuracy hang on. A choice recorded on a CPU where any of these differ
# is measured again before it is used: int8 without VNNI saturates (u8 x s8 products overflow the
# 16-bit sums of plain AVX2) and loses accuracy, bf16 needs AVX512-BF16 or AMX, and the ranking of
# the rest moves with the vector width.
CHOICE_KEYS = ("cpu_class", "cpu_features")
RECHECK_SECONDS = 0.15  # per candidate and batch size: the re-check runs at every load


def _cpu_now() -> dict:
    from deepautodnn.utils.runtime import cpu_class, cpu_features

    return {"cpu_class": cpu_class(), "cpu_features": cpu_features()}


def _unfit_here(name: str, cpu: dict) -> str | None:
    """Why backend `name` must not run on this CPU even if it held accuracy elsewhere, or None."""
    features = cpu["cpu_features"]
    if name == "onnx-int8" and not (features["avx512_vnni"] or features["avx_vnni"] or features["amx_int8"]):
        return "no VNNI, where int8 loses accuracy"
    if name == "torch-bf16" and not cpu["cpu_class"].startswith("avx512-bf16") and not features["amx_bf16"]:
        return "no bf16"
    return None


def choose_auto(model_dir: str | Path):
    """The backend "auto" runs, and one line saying why: the one `export` chose (backend.json) when
    this CPU is of the class and features it was chosen on; otherwise those that held accuracy at
    export and suit this CPU are timed briefly here and the fastest at batch 64 wins, the rule
    `export` applies. Returns (backend, reason)."""
    from deepautodnn.errors import ModelFileError
    from deepautodnn.inference.timing import backend_speed
    from deepautodnn.models.serialization import load_config
    from deepautodnn.utils.files import read_json

    path = Path(model_dir) / BACKEND_FILE
    if not path.exists():
        return make_backend(model_dir, "torch"), "no backend.json yet (`deepautodnn export` measures the others)"
    record = read_json(path)
    here = _cpu_now()
    there = {key: record.get("machine", {}).get(key) for key in CHOICE_KEYS}
    chosen = record.get("chosen")
    if there == here and chosen in BACKENDS:
        return make_backend(model_dir, chosen), f"chosen by `export` on this CPU class ({here['cpu_class']})"
    held = [n for n, r in record.get("backends", {}).items() if n in BACKENDS and r.get("holds_accuracy")]
    side = load_config(model_dir).model.image_size
    noise = np.random.default_rng(0).integers(0, 256, (64, side, side), dtype=np.uint8)  # speed is all it measures
    left_out, timed = [], {}
    for name in held or ["torch"]:
        unfit = _unfit_here(name, here)
        if unfit:
            left_out.append(f"{name}: {unfit}")
            continue
        try:
            backend = make_backend(model_dir, name)
        except (ValueError, ModelFileError, ImportError) as err:  # a missing file or extra
            left_out.append(f"{name}: {str(err).splitlines()[0][:80]}")
            continue
        timed[name] = (backend, backend_speed(backend, noise, batches=(64,), seconds_per_batch=RECHECK_SECONDS))
    if not timed:
        return make_backend(model_dir, "torch"), "no backend recorded by `export` runs here; " + "; ".join(left_out)
    best = max(timed, key=lambda n: timed[n][1]["64"]["images_per_s"])
    rates = ", ".join(f"{n} {t['64']['images_per_s']:.0f} img/s" for n, (_, t) in timed.items())
    reason = (
        f"`export` chose {chosen} on {there['cpu_class'] or 'a CPU it did not describe'}; re-checked on this "
        f"{here['cpu_class']} CPU at batch 64: {rates}" + (f" (left out {'; '.join(left_out)})" if left_out else "")
    )
    return timed[best][0], reason


def make_backend(model_dir: str | Path, backend: str = "auto", echo=None):
    """A backend for a model directory. "auto" is the one `deepautodnn export` chose (see BACKEND_FILE),
    re-checked first on a CPU unlike the one it was chosen on (`choose_auto`); `echo`, if given, gets
    one line saying what "auto" chose and why. `model_dir` may be a pretrained name."""
    model_dir = resolve_model_dir(model_dir)
    if backend == "auto":
        chosen, reason = choose_auto(model_dir)
        if echo is not None:
            echo(f"backend auto: {chosen.name} ({reason})")
        return chosen
    if backend in ("torch", "torch-bf16"):
        return TorchBackend.from_model_dir(model_dir, bf16=backend == "torch-bf16")
    if backend == "onnx":
        return OnnxBackend(Path(model_dir) / ONNX_FILE)
    if backend == "onnx-int8":
        return OnnxBackend(Path(model_dir) / INT8_ONNX_FILE, name="onnx-int8")
    raise ValueError(f"unknown backend {backend!r}; use auto or one of {', '.join(BACKENDS)}")


def backend_accuracy(backend, images_u8: np.ndarray, labels: np.ndarray, batch_size: int = 1024) -> float:
    """Share of `images_u8` whose top class from `backend` (first output) matches `labels`."""
    proba = run_batched(backend, images_u8, batch_size, reconstruction=False).proba
    return float((proba.argmax(1) == labels).mean())


def run_batched(
    backend, images_u8: np.ndarray, batch_size: int = 1024, reconstruction: bool = True, embedding: str | None = None
) -> GraphOutputs:
    """`backend.run` over `images_u8` in chunks, the outputs concatenated; `embedding` (a space)
    asks a torch backend for the search vectors too."""
    kwargs = {} if embedding is None else {"embedding": embedding}
    parts = [
        backend.run(images_u8[i : i + batch_size], reconstruction=reconstruction, **kwargs)
        for i in range(0, len(images_u8), batch_size)
    ]
    if not parts:
        raise ValueError("no images to run")
    return GraphOutputs(*(None if part[0] is None else np.concatenate(part) for part in zip(*parts)))
