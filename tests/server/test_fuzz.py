"""Seeded fuzzing of the real server: hundreds of malformed or odd requests — JSON bodies with every field
given random values of random types (huge and negative integers, floats, nested containers, unicode,
nulls, deep nesting), random content types and raw bytes, multipart bodies with random files and fields,
odd methods and paths. The targeted cases with their exact error codes live in test_errors.py; here the
contract is general: never a 5xx, every error in the API's shape, and the server still serves afterwards."""
from __future__ import annotations

import io
import json
import random

import httpx
import pytest
from PIL import Image

from .conftest import API_KEY

FIELDS = ["prompt", "n", "size", "response_format", "model", "user", "quality", "style", "image", "mask", "extra"]
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(12 if depth < 3 else 8)
    return [
        lambda: rng.randint(-10, 12), lambda: rng.choice([0, 1, 2, 10, 11, -1, 2**63, -2**63, 10**30]),
        lambda: rng.uniform(-1e9, 1e9), lambda: rng.choice(["64x64", "256x256", "1024x1024", "0x0", "64X64", "x", ""]),
        lambda: "".join(rng.choice("ab \u00e9\u4e2d\U0001f600\u202e\x00<>\"'") for _ in range(rng.randint(0, 40))),
        lambda: rng.choice([None, True, False]), lambda: rng.choice(["url", "b64_json", "URL", "png"]),
        lambda: "k" + "|" * rng.randint(0, 3000),
        lambda: [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))],
        lambda: {str(rng.randint(0, 9)): _value(rng, depth + 1) for _ in range(rng.randint(0, 3))},
        lambda: rng.choice(["a red star", "a blue circle on a green background"]),
        lambda: "x" * rng.choice([999, 1000, 1001, 4001]),
    ][kind]()


def _json_body(rng: random.Random) -> bytes:
    body = {f: _value(rng) for f in rng.sample(FIELDS, rng.randint(0, 5))}
    if rng.random() < 0.5:  # mostly-valid requests with one odd field, so the deeper checks are reached
        body = {"prompt": "a red star", "size": "64x64", "n": 1, **dict(list(body.items())[:1])}
    text = json.dumps(body)
    if rng.random() < 0.1:
        text = text[: rng.randint(0, len(text))]  # truncated
    if rng.random() < 0.05:
        text = "[" * 50_000 + "]" * 50_000
    return text.encode()


def _png(rng: random.Random) -> bytes:
    side = rng.choice([1, 8, 64, 65])
    image = Image.new(rng.choice(["RGB", "RGBA", "L", "P"]), (side, rng.choice([side, side + 1])))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data = buf.getvalue()
    return data[: rng.randint(8, len(data))] if rng.random() < 0.3 else data


def _multipart(rng: random.Random) -> dict:
    files = {name: (f"{name}.png", _png(rng) if rng.random() < 0.8 else rng.randbytes(rng.randint(0, 64)),
                    rng.choice(["image/png", "text/plain", "application/octet-stream"]))
             for name in rng.sample(["image", "mask", "other"], rng.randint(0, 2))}
    data = {f: str(_value(rng))[:2000] for f in rng.sample(["prompt", "n", "size", "response_format", "user"],
                                                             rng.randint(0, 4))}
    return {"files": files or None, "data": data}


def _request(rng: random.Random, url: str) -> httpx.Response:
    roll = rng.random()
    headers = dict(AUTH) if rng.random() < 0.9 else rng.choice([{}, {"Authorization": "Bearer nope"},
                                                                {"Authorization": "Basic Zm9vOmJhcg=="}])
    if roll < 0.5:
        ctype = rng.choice(["application/json"] * 6 + ["text/plain", "application/json; charset=latin-1", ""])
        return httpx.post(f"{url}/v1/images/generations", content=_json_body(rng),
                          headers={**headers, "Content-Type": ctype}, timeout=120)
    if roll < 0.8:
        path = rng.choice(["/v1/images/edits", "/v1/images/variations"])
        return httpx.post(f"{url}{path}", headers=headers, timeout=120, **_multipart(rng))
    if roll < 0.9:
        return httpx.post(f"{url}/v1/images/{rng.choice(['generations', 'edits', 'variations'])}",
                          content=rng.randbytes(rng.randint(0, 2048)),
                          headers={**headers, "Content-Type": rng.choice(["multipart/form-data; boundary=x",
                                                                          "application/json", "image/png"])})
    method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
    path = rng.choice(["/v1/images/generations", "/v1/models", "/health", "/v1/images/files/../../etc/passwd",
                       "/v1/images/files/%00", "/" + "a" * 5000])
    return httpx.request(method, f"{url}{path}", headers=headers)


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_requests_never_get_a_5xx_and_errors_keep_their_shape(server_url, seed):
    rng = random.Random(seed)
    statuses = []
    for _ in range(60):
        r = _request(rng, server_url)
        statuses.append(r.status_code)
        assert r.status_code < 500 or r.status_code == 504, (r.status_code, r.text[:300])
        if r.status_code >= 400 and r.request.method != "HEAD":
            error = r.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert httpx.get(f"{server_url}/health").json()["status"] == "ok"
    assert any(s == 200 for s in statuses) and any(s == 400 for s in statuses)  # both paths were exercised
