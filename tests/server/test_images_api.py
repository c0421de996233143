"""The three endpoints through the official `openai` client: every size the pipeline makes, both
response formats, n > 1; URLs download PNGs of the right size and expire; b64 decodes to one."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import API_KEY, URL_TTL_S
from .helpers import image_of, png_bytes


@pytest.mark.parametrize("size,fmt,n", [("64x64", "url", 2), ("256x256", "b64_json", 1), ("512x512", "url", 1)])
def test_generate(client, size, fmt, n):
    t0 = int(time.time())
    r = client.images.generate(model="dall-e-2", prompt="a small red star at the top left", n=n, size=size,
                               response_format=fmt, user="user-123")
    assert t0 - 1 <= r.created <= time.time() + 1
    assert len(r.data) == n
    side = int(size.split("x")[0])
    for item in r.data:
        img = image_of(item)
        assert img.size == (side, side) and img.mode == "RGB"


def test_generate_default_format_is_url_and_pipeline_name_is_a_model(client, pipeline_dir):
    r = client.images.generate(model=pipeline_dir.name, prompt="a large blue circle", size="64x64")
    assert len(r.data) == 1 and r.data[0].url is not None and r.data[0].b64_json is None
    assert image_of(r.data[0]).size == (64, 64)


def test_generations_batch_concurrent_requests(client):
    """Two requests in flight at once (the queue holds 2) are both answered with their own images."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda n: client.images.generate(prompt=f"{n} green squares", n=n, size="64x64",
                                                                 response_format="b64_json"), [1, 3]))
    assert [len(r.data) for r in results] == [1, 3]


@pytest.mark.parametrize("size,fmt", [("64x64", "b64_json"), ("256x256", "url")])
def test_edit_with_transparent_image(client, size, fmt):
    r = client.images.edit(image=("scene.png", png_bytes(), "image/png"), prompt="a purple diamond", n=2,
                           size=size, response_format=fmt)
    side = int(size.split("x")[0])
    assert len(r.data) == 2
    assert all(image_of(d).size == (side, side) for d in r.data)


def test_edit_with_mask(client):
    image = png_bytes(mode="RGB", hole=False)  # no alpha: the mask carries the hole
    mask = png_bytes(mode="RGBA", hole=True)
    r = client.images.edit(image=("scene.png", image, "image/png"), mask=("mask.png", mask, "image/png"),
                           prompt="a cyan star", size="512x512", response_format="b64_json")
    assert image_of(r.data[0]).size == (512, 512)


@pytest.mark.parametrize("size,fmt,n", [("64x64", "url", 3), ("256x256", "b64_json", 1)])
def test_variation(client, size, fmt, n):
    r = client.images.create_variation(image=("scene.png", png_bytes(mode="RGB", hole=False), "image/png"), n=n,
                                       size=size, response_format=fmt)
    side = int(size.split("x")[0])
    assert len(r.data) == n and all(image_of(d).size == (side, side) for d in r.data)


def test_models_and_health(client, server_url, pipeline_dir):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["dall-e-2", pipeline_dir.name]
    health = httpx.get(f"{server_url}/health").json()
    assert health["status"] == "ok" and health["sizes"] == ["64x64", "256x256", "512x512"]


def test_urls_expire_and_unknown_ones_are_404(client, server_url):
    r = client.images.generate(prompt="a small white square", size="64x64")
    url = r.data[0].url
    assert url.startswith(f"{server_url}/v1/images/files/")
    assert httpx.get(url).status_code == 200
    time.sleep(URL_TTL_S + 0.5)
    gone = httpx.get(url)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "image_not_found"
    assert httpx.get(f"{server_url}/v1/images/files/not-a-real-id.png").status_code == 404


def test_raw_multipart_strings_are_parsed(server_url):
    """Form fields arrive as strings ("2"); a plain multipart client gets the same answer as the SDK."""
    r = httpx.post(f"{server_url}/v1/images/variations", headers={"Authorization": f"Bearer {API_KEY}"},
                   files={"image": ("a.png", png_bytes(mode="RGB", hole=False), "image/png")},
                   data={"n": "2", "size": "64x64", "response_format": "b64_json"}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"created", "data"} and len(body["data"]) == 2 and set(body["data"][0]) == {"b64_json"}
