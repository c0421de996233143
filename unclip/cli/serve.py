"""Serve a pipeline directory as an OpenAI-compatible Images API.

    UNCLIP_API_KEYS=sk-local-1 python sample/serve.py demo_out/pipeline --port 8000
    # then: OpenAI(base_url="http://localhost:8000/v1", api_key="sk-local-1").images.generate(...)

Options mirror unclip.server.ServerConfig; see docs/api.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import uvicorn

from unclip.server import ServerConfig, create_app
from unclip.server.config import DTYPES
from unclip.server.protocol import header_timeout_protocol

# The options that set a ServerConfig field take their defaults from it (the one place they are written).
_DEFAULT = {f.name: f.default for f in dataclasses.fields(ServerConfig)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = _DEFAULT  # ServerConfig's
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pipeline_dir", type=Path, help="a pipeline directory (clip/, prior/, decoder/, sr256/, sr1024/)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default=d["device"], help="cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", default=d["dtype"], choices=list(DTYPES))
    p.add_argument("--settings", default=d["settings"],
                   help="stage-settings preset (fast | paper) or a JSON object of overrides, "
                        'e.g. \'{"preset": "fast", "decoder": {"steps": 50}}\'')
    p.add_argument("--no-moderation", action="store_true", help="turn the pipeline's moderation filters off")
    p.add_argument("--moderation-config", type=Path, default=None,
                   help="moderation YAML (default: configs/moderation/default.yaml)")
    p.add_argument("--threads", type=int, default=d["torch_threads"],
                   help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--model-name", default=d["model_name"],
                   help="name listed by /v1/models (default: the directory's name)")
    p.add_argument("--default-size", default=d["default_size"],
                   help="size used when a request gives none (default: the largest the pipeline makes, as the CLI)")
    p.add_argument("--api-keys-file", type=Path, default=d["api_keys_file"], help="file with one API key per line")
    p.add_argument("--api-keys-env", default=d["api_keys_env"], help="environment variable with comma-separated keys")
    p.add_argument("--no-auth", action="store_true", help="serve without API keys (local experiments only)")
    p.add_argument("--queue-size", type=int, default=d["queue_size"],
                   help="requests waiting or running at once; more get 429")
    p.add_argument("--queue-images", type=int, default=d["queue_images"],
                   help="images those requests may ask for in all")
    p.add_argument("--max-requests-per-key", type=int, default=d["max_requests_per_key"],
                   help="requests one API key (or client address) may have waiting or running")
    p.add_argument("--body-timeout", type=float, default=d["body_timeout_s"],
                   help="seconds without body bytes before a 408")
    p.add_argument("--header-timeout", type=float, default=d["header_timeout_s"],
                   help="seconds a connection may take to send a request's headers before it is closed")
    p.add_argument("--max-batch-images", type=int, default=d["max_batch_images"],
                   help="images one batched pipeline call may hold")
    p.add_argument("--request-timeout", type=float, default=d["request_timeout_s"],
                   help="seconds before a request gets 504")
    p.add_argument("--url-ttl", type=float, default=d["url_ttl_s"], help="seconds a response URL stays valid")
    p.add_argument("--public-url", default=d["public_url"],
                   help="base of response URLs (default: the request's own host)")
    p.add_argument("--max-request-mb", type=float, default=d["max_request_bytes"] / 2**20,
                   help="request body limit (uploads: < 4 MB each)")
    p.add_argument("--log-prompts", action="store_true", help="include prompts in the request log")
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    settings = args.settings
    if settings.lstrip().startswith("{"):
        settings = json.loads(settings)
    return ServerConfig(
        pipeline_dir=args.pipeline_dir, device=args.device, dtype=args.dtype, settings=settings,
        moderation=False if args.no_moderation else (args.moderation_config or _DEFAULT["moderation"]),
        torch_threads=args.threads,
        model_name=args.model_name, default_size=args.default_size,
        api_keys_file=args.api_keys_file, api_keys_env=args.api_keys_env, allow_no_auth=args.no_auth,
        queue_size=args.queue_size, queue_images=args.queue_images, max_requests_per_key=args.max_requests_per_key,
        body_timeout_s=args.body_timeout, header_timeout_s=args.header_timeout,
        max_batch_images=args.max_batch_images, request_timeout_s=args.request_timeout,
        url_ttl_s=args.url_ttl, public_url=args.public_url, max_request_bytes=int(args.max_request_mb * 2**20),
        log_prompts=args.log_prompts,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.pipeline_dir.is_dir():
        sys.exit(f"error: pipeline directory {args.pipeline_dir} does not exist")
    app = create_app(config_from_args(args))
    # uvicorn's own access log is off: ours (unclip.server.access) adds latency and image counts, elides tokens.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level=args.log_level,
                http=header_timeout_protocol(args.header_timeout))


if __name__ == "__main__":
    main()
