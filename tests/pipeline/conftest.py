"""Tiny random-weight pipelines shared by the pipeline tests (built once per session)."""
import pytest
import torch

from unclip.clip import FrozenCLIP
from unclip.data.shapes import ShapesDataset
from unclip.pipeline import UnCLIPPipeline, build_random_pipeline
from unclip.pipeline.images import to_tensor
from unclip.training.clip_contrastive import ClipTrainConfig, train_clip_contrastive

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
def trained_clip():
    """unclip-tiny trained contrastively for 100 steps of 32 on 256 in-memory shapes samples (~40 s on one
    thread; measured: red-star images score ~0.1–0.6 against "a red star", blue circles ~−0.35)."""
    ds = ShapesDataset("train", length=256, seed=0)
    images = torch.cat([to_tensor(ds.image(i)) for i in range(len(ds))])
    captions = [ds.caption(i) for i in range(len(ds))]
    torch.manual_seed(0)
    clip = FrozenCLIP.create("unclip-tiny")
    x = clip.preprocess_tensor(images, value_range=(-1.0, 1.0))
    batches = [(x[i:i + 32], captions[i:i + 32]) for i in range(0, len(ds), 32)]
    clip.model.requires_grad_(True)
    try:
        train_clip_contrastive(clip.model, clip.tokenize, batches,
                               ClipTrainConfig(steps=100, lr=1e-3, warmup_steps=10, progress=False))
    finally:
        clip.model.requires_grad_(False)
    return clip
