"""The machine record every figure carries (utils/runtime.py): the CPU class, its features, and an
ISA limit named as one, so that an imitation never reads as the real class."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deepautodnn.utils import runtime


def test_machine_info_names_the_cpu_class_and_its_features(monkeypatch):
    for name in runtime.ISA_LIMITS:  # the suite may itself run under an imitation
        monkeypatch.delenv(name, raising=False)
    info = runtime.machine_info()
    assert info["cpu_class"] in ("avx512-bf16", "avx512", "avx2", "baseline")  # no limit set in the tests
    assert set(info["cpu_features"]) == set(runtime.SPEED_FLAGS)
    assert info["isa_limits"] == {}
    assert info["cpu_bf16"] == runtime.bf16_supported(runtime.torch.device("cpu"))
    if info["cpu_bf16"]:
        assert info["cpu_class"] == "avx512-bf16" or info["cpu_features"]["amx_bf16"]


@pytest.mark.parametrize(
    ("flags", "onednn", "expected"),
    [
        ({"avx2", "avx512f", "avx512_bf16"}, True, True),
        ({"avx2", "avx512f"}, True, False),  # Skylake to Ice Lake: oneDNN emulates bf16, slower than float32
        ({"avx2", "amx_tile", "amx_bf16"}, True, True),
        ({"avx2", "avx512f", "avx512_bf16"}, False, False),  # oneDNN limited to AVX2
        (set(), True, True),  # no /proc/cpuinfo: oneDNN's word
    ],
)
def test_bf16_counts_only_where_the_cpu_has_it(monkeypatch, flags, onednn, expected):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    monkeypatch.setattr(runtime.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    assert runtime.bf16_supported(runtime.torch.device("cpu")) is expected


@pytest.mark.parametrize(
    ("effective", "bf16", "hardware", "expected"),
    [
        ("AVX512", True, {"avx2", "avx512f", "avx512_bf16"}, "avx512-bf16"),
        ("AVX512", False, {"avx2", "avx512f"}, "avx512"),
        ("AVX2", False, {"avx2", "fma"}, "avx2"),
        ("DEFAULT", False, set(), "baseline"),
    ],
)
def test_cpu_class_is_what_torch_computes_with(monkeypatch, effective, bf16, hardware, expected):
    monkeypatch.setattr(runtime.torch.backends.cpu, "get_cpu_capability", lambda: effective)
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: bf16)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: hardware)
    assert runtime.cpu_class() == expected
    if "avx2" not in hardware:
        return
    # The same CPU limited to AVX2 by the environment says both what it computes with and what it is.
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setattr(runtime.torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: False)
    assert runtime.cpu_class() == ("avx2" if expected == "avx2" else f"avx2 (limited, on an {expected} CPU)")
    assert runtime.isa_limits() == {"ONEDNN_MAX_CPU_ISA": "AVX2"}


@pytest.mark.skipif("avx512f" not in runtime.cpu_flags(), reason="needs an AVX-512 CPU to limit")
def test_a_real_isa_limit_turns_off_bf16_and_is_recorded():
    code = "import json; from deepautodnn.utils.runtime import machine_info; print(json.dumps(machine_info()))"
    env = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    import json

    info = json.loads(out)
    assert info["cpu_capability"] == "AVX2" and info["cpu_bf16"] is False
    assert info["cpu_class"].startswith("avx2 (limited, on an avx512")
