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


def _drive(app, method="POST", path="/v1/images/generations"):
    """Run the middleware over ``app`` for one request; returns the ASGI messages it sent."""
    import asyncio

    from unclip.server.middleware import LimitAndLogMiddleware

    sent = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [(b"content-length", b"2")]}
    asyncio.run(LimitAndLogMiddleware(app, 1000)(scope, receive, send))
    return sent


def test_an_unhandled_error_is_answered_500_and_logged_with_that_status(caplog):
    import json
    import logging

    async def broken(scope, receive, send):
        raise RuntimeError("a bug")

    with caplog.at_level(logging.INFO, logger="unclip.server"):
        sent = _drive(broken)
    assert sent[0]["status"] == 500 and json.loads(sent[1]["body"])["error"]["type"] == "server_error"
    access = [r.getMessage() for r in caplog.records if r.name == "unclip.server.access"]
    assert len(access) == 1 and " 500 " in access[0]  # was status 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info[0] is RuntimeError  # the traceback, once


def test_a_client_that_went_away_is_one_info_line_not_a_traceback(caplog):
    import logging

    from starlette.requests import ClientDisconnect

    async def reader(scope, receive, send):
        raise ClientDisconnect()

    with caplog.at_level(logging.INFO, logger="unclip.server"):
        sent = _drive(reader)
    assert sent == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("client disconnected" in r.getMessage() for r in caplog.records)
