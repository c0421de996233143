"""Exact resume after a real SIGKILL, crash-safe checkpoint writes, non-finite loss handling."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch

from unclip.training import NonFiniteLossError, train
from unclip.training import checkpoint as ckpt

from .conftest import PYTHON, REPO, TRAIN, compose_cfg, overrides_for, subprocess_env

STEPS = 8  # batch 4: 32 samples; checkpoints every 2 steps


def _args(data, run_dir, *extra):
    return overrides_for("decoder", data, run_dir, f"total_samples={4 * STEPS}", "stage.optim.lr=1e-3",
                         "stage.ema.decay=0.9", *extra)


def test_killed_run_resumes_exactly(tiny_data, tmp_path):
    # The killed run is a subprocess with OMP_NUM_THREADS=1: the in-process runs must reduce in the same
    # order, whatever an earlier test left the thread count at.
    torch.set_num_threads(1)
    full = train(compose_cfg(_args(tiny_data, tmp_path / "full")))
    assert full["steps"] == STEPS

    killed = tmp_path / "killed"
    proc = subprocess.Popen([PYTHON, TRAIN, *_args(tiny_data, killed)], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not ckpt.list_checkpoints(killed) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # mid-run, right after its first checkpoint
    finally:
        proc.wait()
    done = [int(p.stem.split("-")[1]) for p in ckpt.list_checkpoints(killed)]
    assert done and max(done) < STEPS and not (killed / "summary.json").exists(), done

    resumed = train(compose_cfg(_args(tiny_data, killed, "checkpoint.resume=true")))
    assert resumed["steps"] == STEPS and resumed["samples_seen"] == full["samples_seen"]
    assert resumed["losses"] == pytest.approx(full["losses"][max(done):], rel=1e-5, abs=1e-6)
    a = ckpt.load_checkpoint(full["checkpoint"])
    b = ckpt.load_checkpoint(resumed["checkpoint"])
    for part in ("model", "ema"):
        for k, v in a[part].items():
            torch.testing.assert_close(b[part][k], v, rtol=1e-5, atol=1e-6, msg=f"{part}.{k}")
    assert a["data"] == b["data"]


def test_crash_while_writing_a_checkpoint_keeps_the_previous(tmp_path, monkeypatch):
    state = {"model": {"w": torch.ones(3)}, "step": 2, "rng": ckpt.rng_state()}
    first = ckpt.save_checkpoint(tmp_path, 2, state)

    def torn_save(obj, path, *a, **k):  # half a file, then the process "dies"
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 torn")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, 4, state | {"step": 4})
    monkeypatch.undo()
    assert ckpt.list_checkpoints(tmp_path) == [first]
    assert not [p for p in ckpt.checkpoint_dir(tmp_path).iterdir() if p.name.startswith(".")]  # no temp left
    path, loaded = ckpt.load_latest(tmp_path)
    assert path == first and loaded["step"] == 2 and torch.equal(loaded["model"]["w"], torch.ones(3))
    # a damaged newest file (e.g. a disk error after the rename) falls back to the one before
    (ckpt.checkpoint_dir(tmp_path) / "ckpt-000000006.pt").write_bytes(b"garbage")
    assert ckpt.load_latest(tmp_path)[0] == first
    ckpt.set_rng_state(loaded["rng"])  # weights_only-loadable RNG states restore


def test_keeps_the_last_k(tmp_path):
    for s in range(1, 6):
        ckpt.save_checkpoint(tmp_path, s, {"step": s}, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-000000004.pt", "ckpt-000000005.pt"]


def test_non_finite_losses_skip_then_stop_with_advice(tiny_data, tmp_path, monkeypatch):
    import unclip.training.loop as loop

    real_build = loop.build_stage

    def nan_stage(cfg, env):
        parts = real_build(cfg, env)
        real_loss = parts.loss
        parts.loss = lambda m, b, g: real_loss(m, b, g) * float("nan")
        return parts

    monkeypatch.setattr(loop, "build_stage", nan_stage)
    cfg = compose_cfg(overrides_for("prior", tiny_data, tmp_path / "nan", "max_nonfinite=3", "total_samples=40"))
    with pytest.raises(NonFiniteLossError, match=r"3 non-finite losses in a row.*stage\.optim\.lr.*warmup"):
        train(cfg)


def test_resume_only_adopts_the_run_it_is_given(tiny_data, tmp_path):
    """checkpoint.resume=true in a new run directory never takes a sibling run's checkpoint; resume_from
    takes another run's only when the configs agree on the model and the data order, and says why not."""
    first = train(compose_cfg(_args(tiny_data, tmp_path / "a", "total_samples=8")))
    assert first["steps"] == 2 and ckpt.list_checkpoints(tmp_path / "a")

    fresh = train(compose_cfg(_args(tiny_data, tmp_path / "b", "total_samples=8", "seed=7",
                                    "checkpoint.resume=true")))
    assert fresh["steps"] == 2 and fresh["losses"] and len(fresh["losses"]) == 2  # trained, did not adopt "a"

    with pytest.raises(ValueError, match=r"seed: 0 -> 7"):
        train(compose_cfg(_args(tiny_data, tmp_path / "c", "total_samples=16", "seed=7",
                                f"checkpoint.resume_from={tmp_path / 'a'}")))
    with pytest.raises(ValueError, match=r"model: .*model_channels"):
        train(compose_cfg(_args(tiny_data, tmp_path / "d", "total_samples=16", "+model.overrides.model_channels=16",
                                f"checkpoint.resume_from={tmp_path / 'a'}")))
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        train(compose_cfg(_args(tiny_data, tmp_path / "e", f"checkpoint.resume_from={tmp_path / 'nope'}")))

    continued = train(compose_cfg(_args(tiny_data, tmp_path / "f", "total_samples=16",
                                        f"checkpoint.resume_from={tmp_path / 'a'}")))
    assert continued["steps"] == 4 and len(continued["losses"]) == 2  # steps 3 and 4, from a's step 2


def _fake_state(step):
    return {"model": {"w": torch.full((2,), float(step))}, "step": step}


def test_corrupt_checkpoints_are_set_aside_and_never_outlive_good_ones(tmp_path):
    for step in (2, 4, 6):
        ckpt.save_checkpoint(tmp_path, step, _fake_state(step), keep=3)
    (ckpt.checkpoint_dir(tmp_path) / "ckpt-000000008.pt").write_bytes(b"not a checkpoint")
    path, state = ckpt.load_latest(tmp_path)
    assert state["step"] == 6  # the corrupt step 8 was skipped...
    assert (ckpt.checkpoint_dir(tmp_path) / "ckpt-000000008.pt.corrupt").is_file()  # ...and set aside
    ckpt.save_checkpoint(tmp_path, 8, _fake_state(8), keep=3)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [f"ckpt-00000000{s}.pt" for s in (4, 6, 8)]


def test_all_checkpoints_corrupt_fails_loudly(tmp_path):
    d = ckpt.checkpoint_dir(tmp_path)
    d.mkdir(parents=True)
    for step in (2, 4):
        (d / f"ckpt-00000000{step}.pt").write_bytes(b"garbage")
    with pytest.raises(ckpt.CorruptCheckpointsError, match=r"none of the 2 checkpoints.*ckpt-000000004\.pt"):
        ckpt.load_latest(tmp_path)
    assert ckpt.list_checkpoints(tmp_path) == [] and ckpt.load_latest(tmp_path) is None  # a rerun starts over


def test_later_steps_from_an_earlier_life_do_not_push_new_checkpoints_out(tmp_path):
    ckpt.save_checkpoint(tmp_path, 100, _fake_state(100), keep=1)
    ckpt.save_checkpoint(tmp_path, 2, _fake_state(2), keep=1)
    ckpt.save_checkpoint(tmp_path, 4, _fake_state(4), keep=1)
    assert [ckpt._step_of(p) for p in ckpt.list_checkpoints(tmp_path)] == [4, 100]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    d = ckpt.checkpoint_dir(tmp_path)
    d.mkdir(parents=True)
    dead = subprocess.run([PYTHON, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = d / f".ckpt-000000002.pt.tmp-{int(dead.stdout)}"
    mine = d / f".ckpt-000000004.pt.tmp-{os.getpid()}"
    stale.write_bytes(b"half")
    mine.write_bytes(b"being written")
    ckpt.save_checkpoint(tmp_path, 6, _fake_state(6))
    assert not stale.exists() and mine.exists()
