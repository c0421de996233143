"""Tiny random-weight pipelines shared by the pipeline tests (built once per session)."""
import pytest

from unclip.pipeline import UnCLIPPipeline, build_random_pipeline

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
