"""Tiny random-weight pipelines shared by the pipeline tests (built once per session)."""
import pytest

from unclip.clip import FrozenCLIP
from unclip.data.write_shards import write_shards
from unclip.pipeline import UnCLIPPipeline, build_random_pipeline
from unclip.training import compose_config, train

# Few steps: random weights make noise at any step count; the code paths are what is tested.
FAST = {"prior": {"steps": 4}, "decoder": {"steps": 4}, "sr256": {"steps": 2}, "sr1024": {"steps": 1},
        "repaint_resample": 2}


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory):
    """clip/ prior/ decoder/ sr256/ sr1024/ (sr1024 shrunk: it runs at 1024 px on a CPU)."""
    return build_random_pipeline(tmp_path_factory.mktemp("pipe"), upsamplers=("sr256", "sr1024"),
                                 overrides={"sr1024": {"model_channels": 8, "channel_mult": (1, 1, 2),
                                                       "norm_groups": 4}})


@pytest.fixture(scope="session")
def inpaint_dir(tmp_path_factory):
    return build_random_pipeline(tmp_path_factory.mktemp("pipe_inpaint"), inpaint=True, upsamplers=("sr256",),
                                 seed=1)


@pytest.fixture(scope="session")
def pipe(pipeline_dir):
    return UnCLIPPipeline.load(pipeline_dir, settings={"preset": "fast", **FAST})


@pytest.fixture(scope="session")
def inpaint_pipe(inpaint_dir):
    return UnCLIPPipeline.load(inpaint_dir, settings={"preset": "fast", **FAST})


@pytest.fixture(scope="session")
def trained_clip(tmp_path_factory):
    """unclip-tiny trained by the loop's clip stage (stage=clip) for 100 steps of 32 on 256 shapes samples
    (~45 s on one busy thread; measured: red-star images score ~0.3–0.74 against "a red star", blue circles
    ~−0.52, plain colours at most 0.58)."""
    root = tmp_path_factory.mktemp("clip_stage")
    write_shards(root / "train", split="train", n=256, shard_size=128, seed=0)
    train(compose_config(["stage=clip", "logger=none", "logger.progress=false", f"run_dir={root / 'run'}",
                          f"data.shards={root / 'train'}", f"data.val_shards={root / 'train'}", "batch_size=32",
                          "total_samples=3200", "stage.optim.lr=1e-3", "stage.optim.warmup_steps=10",
                          "sample.every_steps=-1", "checkpoint.every_steps=0"]))
    return FrozenCLIP.load(root / "run" / "export" / "clip")
