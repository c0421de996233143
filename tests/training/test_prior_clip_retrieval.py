"""The prior trains from its real config on a clip-retrieval output folder (made by the pipeline's CLIP)
and exports a release; a folder another CLIP made is refused before training."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from unclip.clip import FrozenCLIP
from unclip.models import load_stage
from unclip.training import train

from ..data.test_clip_retrieval import write_clip_retrieval
from .conftest import compose_cfg, overrides_for


@pytest.fixture(scope="module")
def cr_root(tiny_data, tmp_path_factory):
    return write_clip_retrieval(tmp_path_factory.mktemp("cr") / "laion_emb", FrozenCLIP.load(tiny_data["clip"]))


def _cfg(tiny_data, root, run_dir, *extra):
    return compose_cfg(overrides_for("prior", tiny_data, run_dir, f"data.shards={root}", f"data.val_shards={root}",
                                     *extra))


def test_prior_trains_on_clip_retrieval_and_exports(tiny_data, cr_root, tmp_path):
    export_dir = tmp_path / "pipeline"
    cfg = _cfg(tiny_data, cr_root, tmp_path / "run", f"export_dir={export_dir}", "sample.every_steps=0",
               "sample.n=2", "sample.steps=2")
    summary = train(cfg)
    assert summary["steps"] >= 2 and all(np.isfinite(summary["losses"]))
    assert "prior/cos_to_true_zi" in summary["eval"]
    spec, _ = load_stage(export_dir / "prior")
    assert spec.stage == "prior" and spec.extra["normalizer"] == "stats"
    assert len(spec.extra["analytic_gamma"]["64"]) == 64


def test_explicit_format_and_bad_format(tiny_data, cr_root, tmp_path):
    with pytest.raises(ValueError, match="data.format='parquet'"):
        train(_cfg(tiny_data, cr_root, tmp_path / "a", "data.format=parquet"))
    with pytest.raises(ValueError, match="data.resampled=true does not apply to clip-retrieval"):
        train(_cfg(tiny_data, cr_root, tmp_path / "b", "data.format=clip_retrieval", "data.resampled=true"))


def test_folder_made_by_another_clip_is_refused(tiny_data, tmp_path):
    torch.manual_seed(1)
    root = write_clip_retrieval(tmp_path / "other", FrozenCLIP.create("unclip-tiny"), sizes=(8,))
    with pytest.raises(ValueError, match=r"embeddings at .*other were not made by this CLIP \(arch 'unclip-tiny'"
                                         r".*mean cosine -?\d\.\d\d between stored text_emb"):
        train(_cfg(tiny_data, root, tmp_path / "run"))


def test_dim_mismatch_is_refused(tiny_data, tmp_path):
    root = tmp_path / "d64"
    for f in ("img_emb", "text_emb", "metadata"):
        (root / f).mkdir(parents=True)
    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float16)
    np.save(root / "img_emb" / "img_emb_0.npy", x)
    np.save(root / "text_emb" / "text_emb_0.npy", x)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"caption": [f"c{i}" for i in range(8)]}), root / "metadata" / "metadata_0.parquet")
    with pytest.raises(ValueError, match=r"have dim 64 but the CLIP of clip.path=.* has embed_dim 128"):
        train(_cfg(tiny_data, root, tmp_path / "run"))
