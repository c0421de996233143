"""Standard Inception FID (Heusel et al. 2017) from a LOCAL weights file, never downloaded.

The number is torchmetrics' `FrechetInceptionDistance(feature=2048)`: torch-fidelity's InceptionV3
(the TF "2015-12-05" graph ported to PyTorch), pool features of images resized to 299 px inside the
network, FD of the two Gaussians. Its weights are torch-fidelity's release file
``weights-inception-2015-12-05-6726825d.pth``; we only ever read it from a path you give
(`fid_weights=`), so evals stay offline and reproducible. FD over CLIP features (FD_CLIP) stays
the default realism metric; this is the number to compare with published FIDs (which also need the
same reference set, image count and resolution to be comparable).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_NAME}"


def check_fid_weights(path: str | Path) -> Path:
    """Fail before any work: the weights file must exist and torchmetrics + torch-fidelity be installed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"fid_weights: Inception weights file {path} not found. It is torch-fidelity's {WEIGHTS_NAME} "
            f"(released at {WEIGHTS_URL}); fetch it once on a machine with network access and pass its local "
            "path. Evals never download it. Set fid_weights=null to skip Inception FID.")
    try:
        import torch_fidelity  # noqa: F401
        import torchmetrics.image.fid  # noqa: F401
    except ImportError as e:
        raise ImportError(f"Inception FID needs torchmetrics and torch-fidelity ({e}); "
                          "pip install 'unclip[fid]'") from e
    return path


def images_to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL images of one size -> float [N, 3, H, W] in [0, 1] (what the metric takes with normalize=True;
    it multiplies by 255 and truncates to uint8, which gives back every 8-bit value exactly)."""
    sizes = {im.size for im in images}
    if len(sizes) != 1:
        raise ValueError(f"Inception FID expects images of one size per batch, got sizes {sorted(sizes)}")
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255)


class InceptionFID:
    """FID of generated image sets against one reference set, whose statistics are computed once.

        fid = InceptionFID("/weights/weights-inception-2015-12-05-6726825d.pth")
        fid.set_reference(real_images)
        fid(generated_images)  # -> float
    """

    def __init__(self, weights: str | Path, batch_size: int = 32, device: str | torch.device | None = None):
        self.weights = check_fid_weights(weights)
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(self.weights),
                                               normalize=True, reset_real_features=False).to(self.device)
        self.n_reference = 0

    def _update(self, images: Sequence[Image.Image], real: bool) -> None:
        """Accumulate the statistics batch by batch, one image size at a time (the network resizes every
        image to 299 px itself, so mixed sizes need no resizing here)."""
        by_size: dict[tuple[int, int], list[Image.Image]] = {}
        for im in images:
            by_size.setdefault(im.size, []).append(im)
        for group in by_size.values():
            for i in range(0, len(group), self.batch_size):
                self.metric.update(images_to_tensor(group[i:i + self.batch_size]).to(self.device), real=real)

    def set_reference(self, images: Sequence[Image.Image]) -> None:
        """Replace the reference statistics with those of `images` (≥ 2)."""
        if len(images) < 2:
            raise ValueError(f"Inception FID needs at least 2 reference images, got {len(images)}")
        self.metric.reset_real_features = True
        self.metric.reset()
        self.metric.reset_real_features = False
        self._update(images, real=True)
        self.n_reference = len(images)

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image]) -> float:
        """FID of `images` (≥ 2) against the reference set; round-off below 0 is clamped to 0."""
        if not self.n_reference:
            raise RuntimeError("InceptionFID: call set_reference(images) before scoring images")
        if len(images) < 2:
            raise ValueError(f"Inception FID needs at least 2 generated images, got {len(images)}")
        self.metric.reset()  # keeps the reference statistics (reset_real_features=False)
        self._update(images, real=False)
        return max(float(self.metric.compute()), 0.0)
