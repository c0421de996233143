"""trainer.precision: fp32 / bf16 as given, "auto" -> bf16 only where the device runs it natively."""
import pytest
import torch

from unclip.training.dist import native_bf16, resolve_precision


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test cpu\nflags\t\t: {flags}\n\n"
                    f"processor\t: 1\nflags\t\t: {flags}\n")
    return str(path)


def test_native_bf16_reads_the_cpu_flags(tmp_path):
    cpu = torch.device("cpu")
    assert not native_bf16(cpu, _cpuinfo(tmp_path, "fpu sse2 avx avx2 fma"))  # AVX2 only: emulated bf16
    assert native_bf16(cpu, _cpuinfo(tmp_path, "fpu avx2 avx512f avx512_bf16"))
    assert native_bf16(cpu, _cpuinfo(tmp_path, "fpu avx2 amx_tile amx_bf16"))
    assert not native_bf16(cpu, str(tmp_path / "missing"))  # no /proc/cpuinfo (macOS, Windows): fp32
    assert not native_bf16(torch.device("meta"))


def test_resolve_precision():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    with pytest.raises(ValueError, match="trainer.precision='fp16'"):
        resolve_precision("fp16", cpu)
