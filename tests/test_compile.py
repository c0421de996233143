"""The torch.compile switch: a real inductor compile where a C++ compiler exists, eager (with a warning) where none."""
import logging

import torch

from unclip.compile import compiler_missing, maybe_compile


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 2))


def test_off_is_the_module_itself():
    m = _mlp()
    assert maybe_compile(m, False, "cpu") is m


def test_compiled_module_matches_eager_and_reads_through_to_its_attributes():
    m = _mlp()
    m.image_size = 64  # the samplers read such attributes off the network they are given
    c = maybe_compile(m, True, "cpu")
    assert c is not m and c.image_size == 64
    x = torch.randn(4, 8)
    torch.testing.assert_close(c(x), m(x), atol=1e-6, rtol=1e-5)


def test_without_a_compiler_it_runs_eager_and_says_why(monkeypatch, caplog):
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert compiler_missing("cpu").startswith("no C++ compiler")
    m = _mlp()
    with caplog.at_level(logging.WARNING, logger="unclip.compile"):
        assert maybe_compile(m, True, "cpu") is m
    assert "running eager" in caplog.text and "no C++ compiler" in caplog.text
