"""A real Images API server (uvicorn on 127.0.0.1, a free port, in a thread) over a tiny random-weight
pipeline, built once per session, and official `openai` clients pointed at it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from openai import OpenAI

from unclip.pipeline import build_random_pipeline
from unclip.server import ServerConfig, create_app
from unclip.server.protocol import header_timeout_protocol

API_KEY = "sk-test-7f3a9c"  # a key the tests look for in the logs (it must never be there)
# One step per stage: random weights make noise at any step count; the server's code paths are under test.
FAST = {"preset": "fast", "prior": {"sampler": "ddim", "steps": 1, "n_candidates": 1},
        "decoder": {"sampler": "ddim", "steps": 1}, "sr256": {"sampler": "ddim", "steps": 1}, "repaint_resample": 1}
QUEUE_SIZE = 2
URL_TTL_S = 3.0


@contextlib.contextmanager
def serve(config: ServerConfig):
    """Run the app under uvicorn in a thread on a socket bound to a free port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning", access_log=False,
                                           lifespan="on", http=header_timeout_protocol(config.header_timeout_s)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory) -> Path:
    """clip/ prior/ decoder/ (with inpainting channels) sr256/: the sizes 64 and 256, networks shrunk."""
    return build_random_pipeline(
        tmp_path_factory.mktemp("server_pipe"), inpaint=True, upsamplers=("sr256",),
        overrides={"decoder": {"model_channels": 16, "channel_mult": (1, 2), "attention_resolutions": (32,),
                               "num_head_channels": 16},
                   "sr256": {"model_channels": 8, "channel_mult": (1, 2), "norm_groups": 4}})


@pytest.fixture(scope="session")
def key_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text(f"# test keys\n{API_KEY}\nsk-second-key\n")
    return path


@pytest.fixture(scope="session")
def server_url(pipeline_dir, key_file):
    """The main server: default moderation lists, a queue of 2, URLs valid for 3 s."""
    config = ServerConfig(pipeline_dir=pipeline_dir, settings=FAST, api_keys_file=key_file,
                          api_keys_env="UNCLIP_TEST_NO_SUCH_VAR", queue_size=QUEUE_SIZE, max_batch_images=8,
                          url_ttl_s=URL_TTL_S, request_timeout_s=120)
    with serve(config) as url:
        yield url


@pytest.fixture(scope="session")
def client(server_url) -> OpenAI:
    return OpenAI(base_url=f"{server_url}/v1", api_key=API_KEY, max_retries=0, timeout=120)
