"""`pip install .` gives a working package: a wheel built from the repo, installed into a fresh virtual
environment outside the checkout, runs every console command from another folder — configs, moderation
lists and CLIP model configs come from the installed package, never from the repository."""
from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """A venv with our wheel (no editable link) and, through a .pth, the test venv's dependencies."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(root / "dist")], check=True, capture_output=True, cwd=root, timeout=300)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    sp = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip())
    (sp / "_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")  # torch & co., not unclip
    wheel = next((root / "dist").glob("unclip-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="offline", WANDB_SILENT="true")
    work = root / "elsewhere"
    work.mkdir()
    return {"bin": venv / "bin", "py": py, "env": env, "cwd": work, "root": root}


def _run(inst, cmd, *args, timeout=300):
    proc = subprocess.run([str(inst["bin"] / cmd), *map(str, args)], cwd=inst["cwd"], env=inst["env"],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} {args}: {proc.stderr[-3000:]}"
    return proc


def _in_parallel(inst, commands):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(commands)) as pool:
        list(pool.map(lambda c: _run(inst, *c), commands))


def test_the_package_comes_from_the_wheel_not_the_checkout(installed):
    out = subprocess.run([str(installed["py"]), "-c", "import unclip, unclip.moderation as m, unclip.clip as c; "
                          "print(unclip.__file__, m.DEFAULT_CONFIG.is_file(), c.CONFIG_DIR.is_dir())"],
                         cwd=installed["cwd"], env=installed["env"], capture_output=True, text=True, check=True)
    path, moderation, clip_configs = out.stdout.split()
    assert "site-packages" in path and str(REPO) not in path and moderation == clip_configs == "True"


HELP_WORDS = {"unclip-train": "stage=decoder", "unclip-sample": "generate", "unclip-eval": "caption-match",
              "unclip-serve": "--queue-size", "unclip-study": "create", "unclip-precompute": "--shards",
              "unclip-calibrate-moderation": "--reference", "unclip-convert": "karlo"}


def test_every_command_has_a_useful_help(installed):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:  # eight interpreter start-ups, two at a time per core
        outs = dict(zip(HELP_WORDS, pool.map(lambda c: _run(installed, c, "--help").stdout, HELP_WORDS)))
    for cmd, words in HELP_WORDS.items():
        assert words in outs[cmd] and len(outs[cmd].splitlines()) >= 4, (cmd, outs[cmd])


def test_one_tiny_job_from_each_command(installed):
    cwd = installed["cwd"]
    py = str(installed["py"])
    setup = ("from unclip.pipeline import build_random_pipeline; from unclip.data.write_shards import write_shards; "
             "build_random_pipeline('pipe'); write_shards('shards', split='train', n=8, shard_size=8); "
             "write_shards('val', split='val', n=24, shard_size=24)")
    subprocess.run([py, "-c", setup], cwd=cwd, env=installed["env"], check=True, capture_output=True, timeout=300)
    _run(installed, "unclip-precompute", "--clip", "pipe/clip", "--shards", "shards", "--out", "emb")
    train = ("unclip-train", "stage=prior", "logger=none", "logger.progress=false", "run_dir=run", "batch_size=4",
             "total_samples=8", "clip.path=pipe/clip", "data.shards=emb", "data.val_shards=emb",
             "stage.gamma_samples=4", "sample.every_steps=-1")
    calibrate = ("unclip-calibrate-moderation", "--clip", "pipe/clip", "--reference", "val", "--n", "24")
    sample = ("unclip-sample", "generate", "pipeline_dir=pipe", "prompts=[a red star,a blue circle]", "n=1",
              "size=64", "out=samples", "preset=fast", "moderation=false")
    from tests.convert.karlo_tiny import TinyKarlo, build, save
    save(build(TinyKarlo()), cwd / "karlo")  # a tiny Karlo in the diffusers layout (made by the test's venv)
    convert = ("unclip-convert", "karlo", "karlo", "karlo_pipe")
    _in_parallel(installed, [train, calibrate, sample, convert])  # independent jobs: two interpreters per core
    assert json.loads((cwd / "run" / "summary.json").read_text())["steps"] == 2
    assert (cwd / "karlo_pipe" / "sr256" / "model.safetensors").is_file()
    assert len(list((cwd / "samples").glob("*.png"))) >= 2
    _in_parallel(installed, [("unclip-eval", "caption-match", "images_dir=samples", "name=t", "clip.dir=pipe/clip",
                              "out_dir=evals", "n_reference=8"),
                             ("unclip-study", "create", "--out", "study", "a=samples", "b=samples")])
    assert (cwd / "evals" / "caption_match-t.json").is_file() and (cwd / "study").is_dir()
    port = 18000 + os.getpid() % 1000
    server = subprocess.Popen([str(installed["bin"] / "unclip-serve"), "pipe", "--port", str(port), "--no-auth",
                               "--default-size", "64x64", "--threads", "1"], cwd=cwd, env=installed["env"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, health = time.monotonic() + 120, None
        while health is None and time.monotonic() < deadline and server.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
            except httpx.TransportError:
                time.sleep(0.3)
        assert health and health["status"] == "ok", server.stderr.read() if server.poll() is not None else ""
        assert health["moderation"]["images"].startswith("on")  # the calibration above, found beside the CLIP
    finally:
        server.terminate()
        server.wait(timeout=30)
