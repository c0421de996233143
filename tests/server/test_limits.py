"""Servers with other settings: image moderation that flags every upload, a per-request timeout, prompt
logging turned on, and the documented entry point (sample/serve.py) run as a subprocess."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from .conftest import FAST, serve
from .helpers import image_of, png_bytes

KEY = "sk-limits-test"
REPO = Path(__file__).resolve().parents[2]


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def strict_server(pipeline_dir, tmp_path_factory, monkeypatch_module):
    """Moderation: one custom prompt term, and an image concept every image is closer to than -1."""
    from unclip.moderation import Moderator
    cfg = tmp_path_factory.mktemp("moderation") / "strict.yaml"
    cfg.write_text("prompt_categories:\n  violence: [forbiddenword]\n"
                   "image_concepts:\n  - {category: sexual, text: 'anything at all'}\n")
    cfg = Moderator.from_config(cfg, thresholds={"anything at all": -1.0})
    monkeypatch_module.setenv("UNCLIP_LIMITS_KEYS", f"sk-other, {KEY}")
    from unclip.server import ServerConfig
    config = ServerConfig(pipeline_dir=pipeline_dir, settings=FAST, moderation=cfg, api_keys_env="UNCLIP_LIMITS_KEYS",
                          log_prompts=True, default_size="64x64")
    with serve(config) as url:
        yield url


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_moderation_of_uploaded_images(strict_server):
    c = _client(strict_server)
    for call in (lambda: c.images.create_variation(image=("a.png", png_bytes(mode="RGB", hole=False), "image/png")),
                 lambda: c.images.edit(image=("a.png", png_bytes(), "image/png"), prompt="a red star")):
        with pytest.raises(openai.BadRequestError) as info:
            call()
        assert info.value.code == "content_policy_violation" and info.value.param == "image"


def test_flagged_outputs_are_withheld_and_reported_never_sent_black(strict_server):
    """Every image is flagged on this server: the request fails with the API's error, naming the category."""
    with pytest.raises(openai.BadRequestError) as info:
        _client(strict_server).images.generate(prompt="a red star", n=2, size="64x64")
    assert info.value.code == "content_policy_violation" and "output filter" in info.value.message
    assert "sexual" in info.value.message


def test_some_flagged_outputs_are_left_out_and_listed():
    from PIL import Image

    from unclip.server.app import withhold_flagged
    from unclip.server.errors import APIError
    ims = [Image.new("RGB", (4, 4), c) for c in ("red", "green", "blue")]
    kept, blocked = withhold_flagged(ims, [None, "violence/graphic", None])
    assert kept == [ims[0], ims[2]] and blocked == [{"index": 1, "category": "violence/graphic"}]
    assert withhold_flagged(ims, [None] * 3) == (ims, [])
    with pytest.raises(APIError, match="every generated image"):
        withhold_flagged(ims[:1], ["sexual"])


def test_custom_prompt_term_and_prompt_logging(strict_server, caplog):
    caplog.set_level(logging.INFO, logger="unclip.server")
    c = _client(strict_server)
    with pytest.raises(openai.BadRequestError) as info:
        c.images.generate(prompt="a Forbidden-Word on a hill")
    assert info.value.code == "content_policy_violation" and info.value.param == "prompt"
    assert 'prompt="a Forbidden-Word on a hill"' in caplog.text  # log_prompts=True on this server
    assert KEY not in caplog.text


def test_request_timeout_is_504_and_abandoned_work_is_dropped(pipeline_dir):
    from unclip.server import ServerConfig
    config = ServerConfig(pipeline_dir=pipeline_dir, settings=FAST, moderation=False, allow_no_auth=True,
                          api_keys_env="UNCLIP_NO_SUCH_VAR", request_timeout_s=0.02)
    with serve(config) as url:
        c = _client(url)
        with pytest.raises(openai.InternalServerError) as info:
            c.images.generate(prompt="a red star", n=4, size="256x256")
        assert info.value.status_code == 504 and info.value.code == "timeout"
        deadline = time.monotonic() + 30
        while (stats := httpx.get(f"{url}/health").json()["queue"])["admitted"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stats["admitted"] == 0 and stats["alive"]
        assert stats["images_made"] == 0  # dropped from the queue or aborted mid-sampling, never finished
        assert [m.id for m in c.models.list().data][0] == "dall-e-2"  # open server: no key needed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_entry_point_serves(pipeline_dir, tmp_path):
    import json
    port = _free_port()
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{KEY}\n")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "sample" / "serve.py"), str(pipeline_dir), "--port", str(port),
         "--settings", json.dumps(FAST), "--threads", "1", "--default-size", "64x64", "--api-keys-file", str(keys),
         "--queue-size", "4"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "slow"
            time.sleep(0.2)
        r = _client(f"http://127.0.0.1:{port}").images.generate(prompt="a small red star", n=2)
        assert [image_of(d).size for d in r.data] == [(64, 64), (64, 64)]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode in (0, -15), out  # uvicorn re-raises SIGTERM after a clean shutdown
    assert "Application shutdown complete" in out
    assert "POST /v1/images/generations 200" in out and "images=2" in out
    assert KEY not in out and "small red star" not in out


def test_queued_generations_of_one_size_share_a_pipeline_call(pipeline_dir):
    import concurrent.futures
    import threading

    from unclip.server import ServerConfig
    config = ServerConfig(pipeline_dir=pipeline_dir, settings=FAST, moderation=False, allow_no_auth=True,
                          api_keys_env="UNCLIP_NO_SUCH_VAR", queue_size=8, max_batch_images=8)
    with serve(config) as url:
        c = _client(url)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            slow = pool.submit(c.images.generate, prompt="a slow one", n=4, size="256x256", response_format="b64_json")
            deadline = time.monotonic() + 30
            while httpx.get(f"{url}/health").json()["queue"]["admitted"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)  # wait until the worker holds the slow request
            barrier = threading.Barrier(3)

            def quick(n):
                barrier.wait()
                return c.images.generate(prompt=f"{n} quick ones", n=n, size="64x64", response_format="b64_json")

            quick_results = list(pool.map(quick, [1, 2, 3]))
            assert len(slow.result().data) == 4
        assert [[image_of(d).size for d in r.data] for r in quick_results] == [[(64, 64)] * n for n in (1, 2, 3)]
        stats = httpx.get(f"{url}/health").json()["queue"]
        assert stats["images_made"] == 10 and stats["batches_run"] < 4, stats  # 4 requests, fewer calls


def test_a_client_that_disconnects_frees_its_slot_and_stops_its_work(pipeline_dir, caplog):
    """The client gives up after 0.5 s of a job that takes seconds: the server notices the closed connection,
    drops the job (its slot is free again, no image finished) and logs one line, not a traceback."""
    from unclip.server import ServerConfig
    slow = {**FAST, "decoder": {"sampler": "ddim", "steps": 60}, "sr256": {"sampler": "ddim", "steps": 60}}
    config = ServerConfig(pipeline_dir=pipeline_dir, settings=slow, moderation=False, allow_no_auth=True,
                          api_keys_env="UNCLIP_NO_SUCH_VAR", request_timeout_s=120)
    caplog.set_level(logging.INFO, logger="unclip.server")
    with serve(config) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/images/generations", json={"prompt": "a red star", "n": 4, "size": "256x256"},
                       timeout=httpx.Timeout(0.5, connect=5))
        deadline = time.monotonic() + 30
        while (stats := httpx.get(f"{url}/health").json()["queue"])["admitted"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stats["admitted"] == 0 and stats["alive"] and stats["images_made"] == 0
    assert "client disconnected" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture()
def slow_server(pipeline_dir, key_file):
    """Each request takes a second or two (many steps), one request per key, at most 10 images admitted."""
    from unclip.server import ServerConfig
    slow = {**FAST, "decoder": {"sampler": "ddim", "steps": 60}}
    config = ServerConfig(pipeline_dir=pipeline_dir, settings=slow, moderation=False, api_keys_file=key_file,
                          api_keys_env="UNCLIP_NO_SUCH_VAR", max_requests_per_key=1, queue_images=10,
                          max_batch_images=1, request_timeout_s=120)
    with serve(config) as url:
        yield url


def _post_in_background(url, key, n):
    import threading
    out = {}

    def run():
        out["r"] = httpx.post(f"{url}/v1/images/generations", json={"prompt": "a red star", "n": n, "size": "64x64"},
                              headers={"Authorization": f"Bearer {key}"}, timeout=120)
    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 30
    while not httpx.get(f"{url}/health").json()["queue"]["admitted"] and time.monotonic() < deadline:
        time.sleep(0.02)
    return t, out


def test_one_key_cannot_hold_the_queue_and_uploads_are_refused_before_decoding(slow_server):
    from .conftest import API_KEY
    t, out = _post_in_background(slow_server, API_KEY, 2)
    try:
        r = httpx.post(f"{slow_server}/v1/images/generations", json={"prompt": "a star", "size": "64x64"},
                       headers={"Authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 429 and "per key" in r.json()["error"]["message"] and r.headers["Retry-After"]
        # admitted before decoding: a corrupt upload from the same key is refused as busy, never decoded
        r = httpx.post(f"{slow_server}/v1/images/variations", headers={"Authorization": f"Bearer {API_KEY}"},
                       files={"image": ("x.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png")},
                       data={"size": "64x64"})
        assert r.status_code == 429
        # the queue counts images: 2 admitted, another key asking for 9 would make 11 > 10
        r = httpx.post(f"{slow_server}/v1/images/generations", json={"prompt": "a star", "n": 9, "size": "64x64"},
                       headers={"Authorization": "Bearer sk-second-key"})
        assert r.status_code == 429 and "images" in r.json()["error"]["message"]
        r = httpx.post(f"{slow_server}/v1/images/generations", json={"prompt": "a star", "n": 1, "size": "64x64"},
                       headers={"Authorization": "Bearer sk-second-key"}, timeout=120)
        assert r.status_code == 200  # another key, within the image budget
    finally:
        t.join()
    assert out["r"].status_code == 200 and len(out["r"].json()["data"]) == 2
    assert httpx.get(f"{slow_server}/health").json()["queue"]["admitted_images"] == 0  # every ticket released


def test_uploads_of_too_many_pixels_are_refused_from_the_header(client):
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (3000, 3000)).save(buf, format="PNG")
    with pytest.raises(openai.BadRequestError) as info:
        client.images.create_variation(image=("big.png", buf.getvalue(), "image/png"), size="64x64")
    assert info.value.code == "image_too_large" and "3000x3000" in info.value.message


def _read_response(s: socket.socket) -> str:
    """One whole HTTP response: the headers and Content-Length bytes of body (they may come in separate
    segments), or what arrived before the server closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _content_length(data):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode()


def _content_length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_a_body_that_stops_arriving_is_answered_408(pipeline_dir, key_file):
    from unclip.server import ServerConfig

    from .conftest import API_KEY
    config = ServerConfig(pipeline_dir=pipeline_dir, settings=FAST, moderation=False, api_keys_file=key_file,
                          api_keys_env="UNCLIP_NO_SUCH_VAR", body_timeout_s=0.5)
    with serve(config) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(f"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"prompt\": ".encode())
            t0 = time.monotonic()
            answer = _read_response(s)
            assert answer.startswith("HTTP/1.1 408") and "request_timeout" in answer
            assert time.monotonic() - t0 < 5
        assert httpx.get(f"{url}/health").status_code == 200  # and it serves on


def test_headers_trickled_byte_by_byte_get_the_connection_closed(pipeline_dir, key_file):
    """A slowloris client sends a header byte every 0.1 s: every byte would reset a keep-alive timer, but the
    header timeout counts from the connection's start, so the server closes it after ~1 s."""
    from unclip.server import ServerConfig
    config = ServerConfig(pipeline_dir=pipeline_dir, settings=FAST, moderation=False, api_keys_file=key_file,
                          api_keys_env="UNCLIP_NO_SUCH_VAR", header_timeout_s=1.0)
    with serve(config) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            t0, closed = time.monotonic(), False
            for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.1)
                if time.monotonic() - t0 > 6:
                    break
            if not closed:
                s.settimeout(2)
                closed = s.recv(1) == b""
            assert closed and time.monotonic() - t0 < 4
        r = httpx.get(f"{url}/health")  # a normal client is served on
        assert r.status_code == 200
