"""What every pipeline entry point returns: the images and a record per image to make it again."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OUTPUT_TYPES = ("pil", "np", "pt")


def check_output_type(output_type: str) -> str:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type={output_type!r}: expected 'pil', 'np' or 'pt'")
    return output_type


@dataclass
class GenerationResult:
    """``images[i]`` is an RGB PIL image; ``records[i]`` its JSON-serialisable record (mode, prompt,
    seed, index, sample_seed, size, settings, pipeline_dir, plus mode-specific inputs).
    For ``generate`` the order is prompt-major: prompt 0's n images, then prompt 1's, ...
    ``flagged[i]`` is the output-moderation category of image i (its pixels were blacked out) or None.
    With ``output_type`` "np" / "pt" (a pipeline call's ``output_type=``) ``images`` is instead one float32
    array [N, H, W, 3] / tensor [N, 3, H, W] in [0, 1], as diffusers returns them."""

    images: Any = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    flagged: list[str | None] = field(default_factory=list)
    output_type: str = "pil"

    def __len__(self) -> int:
        return len(self.images)

    def images_as(self, output_type: str = "pil"):
        """The images as "pil" (a list of RGB PIL images), "np" (float32 [N, H, W, 3] in [0, 1]) or "pt" (a
        float32 tensor [N, 3, H, W] in [0, 1]) — diffusers' ``output_type``."""
        if check_output_type(output_type) == self.output_type:
            return self.images if output_type != "pil" else list(self.images)
        if self.output_type != "pil":
            raise ValueError(f"this result holds {self.output_type!r} images; images_as converts PIL results only")
        if output_type == "pil":
            return list(self.images)
        import numpy as np

        array = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in self.images])
        if output_type == "np":
            return array
        import torch

        return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()

    def as_type(self, output_type: str) -> GenerationResult:
        """The same result with its images as ``output_type``."""
        if output_type == self.output_type:
            return self
        return GenerationResult(self.images_as(output_type), self.records, self.flagged, output_type)

    def part(self, lo: int, hi: int) -> GenerationResult:
        """Images lo..hi-1 as a result of their own, their records' ``index`` counted from lo (what a call
        making only those images would have recorded)."""
        records = [{**r, "index": r["index"] - lo} if "index" in r else dict(r) for r in self.records[lo:hi]]
        return GenerationResult(self.images[lo:hi], records, self.flagged[lo:hi], self.output_type)

    def extend(self, other: GenerationResult) -> GenerationResult:
        if self.output_type != "pil" or other.output_type != "pil":
            raise ValueError("extend joins PIL results (output_type='pil'); convert the joined result with as_type")
        self.images += other.images
        self.records += other.records
        self.flagged += other.flagged
        return self
