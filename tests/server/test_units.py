"""The server's small pieces on their own: URL store expiry, key sources, size mapping, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from unclip.server.auth import KeyChecker, load_keys
from unclip.server.errors import APIError
from unclip.server.params import accepted_sizes, source_size
from unclip.server.store import ImageStore


def test_store_expires_and_bounds_bytes():
    now = [0.0]
    store = ImageStore(ttl_s=60, max_bytes=10, clock=lambda: now[0])
    a = store.put(b"12345")
    assert store.get(a) == b"12345" and store.get("unknown") is None
    now[0] = 59.9
    assert store.get(a) == b"12345"
    now[0] = 60.0
    assert store.get(a) is None
    b, c, d = store.put(b"1234"), store.put(b"1234"), store.put(b"1234")  # 12 bytes > 10: the oldest goes
    assert store.get(b) is None and store.get(c) and store.get(d)


def test_keys_from_file_and_env(tmp_path, monkeypatch):
    path = tmp_path / "keys"
    path.write_text("# comment\nsk-a\n\n  sk-b  # trailing comment\n")
    monkeypatch.setenv("KEYS_VAR", "sk-c, sk-d,")
    assert load_keys(path, "KEYS_VAR") == ["sk-a", "sk-b", "sk-c", "sk-d"]
    checker = KeyChecker(["sk-a"])
    checker.check("Bearer sk-a")
    for header in (None, "", "Bearer", "Bearer sk-b", "Basic sk-a", "sk-a"):
        with pytest.raises(APIError) as info:
            checker.check(header)
        assert info.value.status == 401
    with pytest.raises(ValueError, match="no API keys"):
        KeyChecker([])
    with pytest.raises(FileNotFoundError):
        load_keys(tmp_path / "missing", None)


def test_size_mapping():
    assert accepted_sizes((64, 256)) == [64, 256, 512]
    assert accepted_sizes((64, 256, 1024)) == [64, 256, 512, 1024]
    assert accepted_sizes((64,)) == [64]
    assert source_size(512, (64, 256)) == 256 and source_size(512, (64, 256, 1024)) == 1024
    assert source_size(256, (64, 256, 1024)) == 256


def test_cli_builds_the_config():
    import importlib.util

    spec = importlib.util.spec_from_file_location("serve", Path(__file__).resolve().parents[2] / "sample/serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    args = serve.parse_args(["some/dir", "--settings", '{"preset": "paper", "decoder": {"steps": 50}}',
                             "--queue-size", "3", "--no-moderation", "--url-ttl", "120", "--max-request-mb", "12"])
    config = serve.config_from_args(args)
    assert config.settings == {"preset": "paper", "decoder": {"steps": 50}} and config.queue_size == 3
    assert config.moderation is False and config.url_ttl_s == 120 and config.max_request_bytes == 12 * 2**20


def test_fastapi_validation_errors_become_400_with_the_api_shape():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from unclip.server.errors import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)

    @app.get("/items")
    def items(limit: int):
        return {"limit": limit}

    client = TestClient(app)
    assert client.get("/items?limit=3").json() == {"limit": 3}
    r = client.get("/items?limit=many")
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "limit" and r.json()["error"]["type"] == "invalid_request_error"
    r = client.get("/nowhere")
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
