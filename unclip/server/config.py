"""Settings of the Images API server: one frozen dataclass, filled by sample/serve.py or a test."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

from unclip.pipeline import UnCLIPPipeline

# device, dtype, settings and moderation default to UnCLIPPipeline.load's: the server serves what it loads.
_LOAD = inspect.signature(UnCLIPPipeline.load).parameters

DTYPES = ("float32", "bfloat16")  # the names the server accepts (app.py loads getattr(torch, dtype))
API_SIZES = (256, 512, 1024)  # the sizes the OpenAI Images API (dall-e-2) accepts
EXTENSION_SIZES = (64,)  # ours: the 64 px decoder output, for pipelines without upsamplers worth waiting for


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    pipeline_dir: Path
    device: str = _LOAD["device"].default
    # float32 | bfloat16 (network weights; the sampling math stays float32)
    dtype: str = str(_LOAD["dtype"].default).removeprefix("torch.")
    settings: str | dict = _LOAD["settings"].default  # stage-settings preset of UnCLIPPipeline (or an override dict)
    # True: configs/moderation/default.yaml; False: off; a config path; or a Moderator
    moderation: Any = _LOAD["moderation"].default
    torch_threads: int | None = None  # intra-op threads of the worker (None: torch's default)
    model_name: str | None = None  # the name /v1/models lists besides "dall-e-2"; default: the pipeline dir's name
    default_size: str | None = None  # a request without size: None = the largest the pipeline makes (as the CLI)

    # auth: keys from a file (one per line, '#' comments) and/or an environment variable (comma-separated)
    api_keys_file: Path | None = None
    api_keys_env: str = "UNCLIP_API_KEYS"
    allow_no_auth: bool = False  # refuse to start without keys unless this is set

    # queue and limits
    queue_size: int = 16  # requests admitted at once (waiting or running); more -> 429
    queue_images: int = 64  # images those requests may ask for in all (an empty queue admits any one request)
    max_requests_per_key: int = 4  # requests one API key (or client address, without auth) may have admitted
    max_batch_images: int = 16  # images one batched pipeline call may hold
    request_timeout_s: float = 600.0  # a request still queued or running after this -> 504
    body_timeout_s: float = 30.0  # a request body with no bytes for this long -> 408 (slow or silent clients)
    header_timeout_s: float = 10.0  # request headers unfinished this long after connecting -> connection closed
    retry_after_s: int = 5  # Retry-After of a 429
    max_upload_bytes: int = 4 * 1024 * 1024  # per image/mask, "less than 4 MB" like the API
    max_request_bytes: int = 9 * 1024 * 1024  # whole body (image + mask + fields); more -> 413 before reading it
    max_image_side: int = 4096  # decompression-bomb guard: larger PNG headers are refused before decoding
    max_image_pixels: int = 2048 * 2048  # and so are PNGs of more pixels (a 4096² upload decodes to ~125 MB)

    # served URLs
    url_ttl_s: float = 3600.0  # 60 minutes, like the API
    url_store_max_bytes: int = 1 << 30  # oldest images are dropped beyond this
    public_url: str | None = None  # e.g. https://images.example.com; default: the request's own base URL

    # logging
    log_prompts: bool = False  # prompts are never logged unless this is set

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")
        if self.queue_images < 1 or self.max_requests_per_key < 1:
            raise ValueError(f"queue_images and max_requests_per_key must be >= 1, got {self.queue_images} and "
                             f"{self.max_requests_per_key}")
        if self.max_batch_images < 1:
            raise ValueError(f"max_batch_images must be >= 1, got {self.max_batch_images}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be {' or '.join(DTYPES)}, got {self.dtype!r}")
        if self.max_upload_bytes >= self.max_request_bytes:
            raise ValueError("max_request_bytes must exceed max_upload_bytes (an upload travels inside a request)")
