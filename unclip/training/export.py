"""Assemble a pipeline directory (clip/, prior/, decoder/, sr256/, sr1024/) from stage releases.

Each training run writes its EMA release to ``<export_dir>/<stage>/`` when ``export_dir`` is set, so
running every stage with one ``export_dir`` already yields the pipeline layout. ``assemble_pipeline``
builds one from releases scattered over run directories, checking that each one loads."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from unclip.clip import FrozenCLIP
from unclip.models import PIPELINE_STAGES, load_stage

REQUIRED = ("clip", "prior", "decoder")


def check_release(stage: str, directory: str | os.PathLike) -> None:
    """Load the release (raises naming the directory and what is wrong)."""
    if stage == "clip":
        FrozenCLIP.load(directory)
    else:
        spec, _ = load_stage(directory)
        if spec.stage != stage:
            raise ValueError(f"{directory} holds a {spec.stage} release, not {stage}")


def assemble_pipeline(out: str | os.PathLike, releases: dict[str, str | os.PathLike], *,
                      overwrite: bool = False) -> Path:
    """Copy ``releases`` ({stage: release dir}) into ``out/<stage>/``; clip, prior and decoder are
    required, the upsamplers optional. Every release is loaded once as a check."""
    unknown = sorted(set(releases) - set(PIPELINE_STAGES))
    missing = [s for s in REQUIRED if s not in releases and not (Path(out) / s).is_dir()]
    if unknown or missing:
        raise ValueError(f"assemble_pipeline: unknown stages {unknown}, missing {missing}; "
                         f"expected {REQUIRED} and optionally sr256, sr1024")
    out = Path(out)
    for stage, src in releases.items():
        check_release(stage, src)
        dst = out / stage
        if Path(src).resolve() == dst.resolve():
            continue
        if dst.exists():
            if not overwrite:
                raise FileExistsError(f"{dst} exists; pass overwrite=True to replace it")
            shutil.rmtree(dst)
        tmp = out / f".{stage}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        os.replace(tmp, dst)
    return out
