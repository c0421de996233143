"""Bad requests get the API's error shape with the right status, code and param, and the server keeps
serving. Every call goes through the official client (max_retries=0) unless the client cannot send it."""

from __future__ import annotations

import logging

import httpx
import openai
import pytest

from .conftest import API_KEY
from .helpers import big_png_bytes, image_of, jpeg_bytes, png_bytes

PNG = ("image.png", png_bytes(), "image/png")
RGB_PNG = ("image.png", png_bytes(mode="RGB", hole=False), "image/png")


def _expect(call, status: int, code: str | None, param: str | None):
    with pytest.raises(openai.APIStatusError) as info:
        call()
    err = info.value
    assert err.status_code == status, err.body
    assert err.code == code and err.param == param, err.body
    body = err.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if status == 400:
        assert body["error"]["type"] == "invalid_request_error"
    return err


GENERATION_CASES = {
    "missing prompt": (dict(prompt=None), "missing_required_parameter", "prompt"),
    "empty prompt": (dict(prompt="  "), "empty_string", "prompt"),
    "prompt of 1001 characters": (dict(prompt="a" * 1001), "string_above_max_length", "prompt"),
    "n = 0": (dict(prompt="a star", n=0), "integer_below_min_value", "n"),
    "n = 11": (dict(prompt="a star", n=11), "integer_above_max_value", "n"),
    "size 300x300": (dict(prompt="a star", size="300x300"), "invalid_value", "size"),
    "size the pipeline cannot make": (dict(prompt="a star", size="1024x1024"), "unsupported_size", "size"),
    "unknown response_format": (dict(prompt="a star", size="64x64", response_format="png"), "invalid_value",
                                "response_format"),
    "unknown model": (dict(prompt="a star", size="64x64", model="dall-e-3"), "invalid_value", "model"),
    "unknown parameter": (dict(prompt="a star", size="64x64", style="vivid"), "unknown_parameter", "style"),
    "moderation hit": (dict(prompt="a naked figure next to a red star", size="64x64"), "content_policy_violation",
                       "prompt"),
    "moderation hit, obfuscated": (dict(prompt="a N.U.D.E figure", size="64x64"), "content_policy_violation",
                                   "prompt"),
}


@pytest.mark.parametrize("case", list(GENERATION_CASES))
def test_bad_generation(client, case):
    kwargs, code, param = GENERATION_CASES[case]
    _expect(lambda: client.images.generate(**kwargs), 400, code, param)


def test_n_as_string_in_json_is_a_type_error(server_url):
    r = httpx.post(f"{server_url}/v1/images/generations", headers={"Authorization": f"Bearer {API_KEY}"},
                   json={"prompt": "a star", "n": "2", "size": "64x64"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n" and r.json()["error"]["code"] == "invalid_type"


@pytest.mark.parametrize("body,content_type,code", [
    (b"{not json", "application/json", "invalid_json"),
    (b"[1, 2]", "application/json", "invalid_json"),
    (b"prompt=a+star", "application/x-www-form-urlencoded", "invalid_content_type"),
])
def test_unparseable_json_is_400_not_422(server_url, body, content_type, code):
    r = httpx.post(f"{server_url}/v1/images/generations", content=body,
                   headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": content_type})
    assert r.status_code == 400 and r.json()["error"]["code"] == code


UPLOAD_CASES = {
    "non-PNG upload": ("edit", dict(image=("notes.txt", b"just some text, not an image", "text/plain")),
                       "invalid_image_format", "image"),
    "JPEG bytes named .png": ("variation", dict(image=("photo.png", jpeg_bytes(), "image/png")),
                              "invalid_image_format", "image"),
    "non-square image": ("edit", dict(image=("wide.png", png_bytes(size=(64, 48)), "image/png")),
                         "image_not_square", "image"),
    "image over 4 MB": ("variation", dict(image=("big.png", big_png_bytes(4 * 2**20), "image/png")),
                        "image_too_large", "image"),
    "mask of another size": ("edit", dict(image=PNG, mask=("mask.png", png_bytes(size=(32, 32)), "image/png")),
                             "mask_size_mismatch", "mask"),
    "mask over 4 MB": ("edit", dict(image=PNG, mask=("mask.png", big_png_bytes(4 * 2**20), "image/png")),
                       "image_too_large", "mask"),
    "image without alpha and no mask": ("edit", dict(image=RGB_PNG), "invalid_image_mode", "image"),
    "image with no fully transparent pixel": ("edit", dict(image=("opaque.png", png_bytes(hole=False), "image/png")),
                                              "empty_mask", "image"),
    "truncated PNG": ("variation", dict(image=("cut.png", png_bytes(noise=True)[:400], "image/png")),
                      "invalid_image", "image"),
    "edit prompt of 1001 characters": ("edit", dict(image=PNG, prompt="b" * 1001), "string_above_max_length",
                                       "prompt"),
    "edit n = 11": ("edit", dict(image=PNG, n=11), "integer_above_max_value", "n"),
    "variation size 300x300": ("variation", dict(image=RGB_PNG, size="300x300"), "invalid_value", "size"),
    "edit moderation hit": ("edit", dict(image=PNG, prompt="pure g0re"), "content_policy_violation", "prompt"),
}


@pytest.mark.parametrize("case", list(UPLOAD_CASES))
def test_bad_upload(client, case):
    kind, kwargs, code, param = UPLOAD_CASES[case]
    kwargs = {"size": "64x64", **kwargs}
    if kind == "edit":
        kwargs.setdefault("prompt", "a purple diamond")
        call = lambda: client.images.edit(**kwargs)  # noqa: E731
    else:
        call = lambda: client.images.create_variation(**kwargs)  # noqa: E731
    _expect(call, 400, code, param)


def test_edit_missing_image_and_prompt(server_url):
    auth = {"Authorization": f"Bearer {API_KEY}"}
    r = httpx.post(f"{server_url}/v1/images/edits", headers=auth, files={"mask": PNG}, data={"prompt": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "image"
    r = httpx.post(f"{server_url}/v1/images/edits", headers=auth, files={"image": PNG}, data={"size": "64x64"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = httpx.post(f"{server_url}/v1/images/variations", headers=auth, data={"n": "two"},
                   files={"image": RGB_PNG})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_type"


def test_missing_or_wrong_api_key(server_url, caplog):
    caplog.set_level(logging.INFO, logger="unclip.server")
    # The client refuses to send without a key, so the keyless request is raw HTTP.
    r = httpx.post(f"{server_url}/v1/images/generations", json={"prompt": "a star", "size": "64x64"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    wrong = openai.OpenAI(base_url=f"{server_url}/v1", api_key="sk-wrong-secret-4242", max_retries=0)
    _expect(lambda: wrong.images.generate(prompt="a secret prompt text", size="64x64"), 401, "invalid_api_key", None)
    _expect(lambda: wrong.models.list(), 401, "invalid_api_key", None)
    _expect(lambda: wrong.images.create_variation(image=RGB_PNG, size="64x64"), 401, "invalid_api_key", None)
    r = httpx.post(f"{server_url}/v1/images/generations", json={"prompt": "x"},
                   headers={"Authorization": f"Basic {API_KEY}"})
    assert r.status_code == 401
    # The access log has the request, never a key, and no prompt (prompt logging is off by default).
    assert "POST /v1/images/generations 401" in caplog.text
    for secret in ("sk-wrong-secret-4242", API_KEY, "a secret prompt text"):
        assert secret not in caplog.text


def test_body_over_the_request_limit_is_413_before_reading(server_url):
    r = httpx.post(f"{server_url}/v1/images/variations", headers={"Authorization": f"Bearer {API_KEY}"},
                   files={"image": ("huge.png", b"\x89PNG\r\n\x1a\n" + bytes(10 * 2**20), "image/png")})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_a_client_still_sending_its_body_reads_the_413_every_time(server_url):
    """The server answers an over-limit Content-Length before the client has sent its body. Closing at once would
    reset the connection under a client still writing (it reads the answer only afterwards): a race that lost the
    413 in many of 60 tries before the server drained the rest. Twenty in a row must all read it."""
    outcomes = []
    for _ in range(20):
        try:
            r = httpx.post(f"{server_url}/v1/images/variations", headers={"Authorization": f"Bearer {API_KEY}"},
                           files={"image": ("huge.png", bytes(10 * 2**20), "image/png")})
            outcomes.append(r.status_code)
        except httpx.TransportError as e:
            outcomes.append(type(e).__name__)
    assert outcomes == [413] * 20


def test_unknown_route_and_method_have_the_error_shape(server_url):
    r = httpx.get(f"{server_url}/v1/images/nope")
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.get(f"{server_url}/v1/images/generations")
    assert r.status_code == 405 and "error" in r.json()


def test_server_still_serves_after_bad_requests(client):
    r = client.images.generate(prompt="a yellow hexagon", n=2, size="64x64", response_format="b64_json")
    assert [image_of(d).size for d in r.data] == [(64, 64), (64, 64)]


def test_chunked_body_over_the_limit_is_cut_off_while_streaming(server_url):
    """No Content-Length to check: the bytes are counted as they arrive and reading stops at the limit."""
    def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n\x89PNG\r\n\x1a\n"
        for _ in range(12):
            yield bytes(2**20)

    r = httpx.post(f"{server_url}/v1/images/variations", content=chunks(),
                   headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_two_images_are_refused(client):
    _expect(lambda: client.images.edit(image=[PNG, PNG], prompt="a star", size="64x64"), 400, "invalid_value", "image")


@pytest.mark.parametrize("raw, why", [
    (b'{"prompt": "a star", "n": ' + b"1" * 5000 + b"}", "digits"),
    (b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
])
def test_unparseable_json_is_400_invalid_json_not_500(server_url, raw, why):
    r = httpx.post(f"{server_url}/v1/images/generations", content=raw,
                   headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert why in r.json()["error"]["message"]


def test_head_health_is_answered(server_url):
    r = httpx.head(f"{server_url}/health")
    assert r.status_code == 200 and r.content == b""


def test_quality_standard_is_accepted_and_others_refused_and_user_is_logged(client, caplog):
    caplog.set_level(logging.INFO, logger="unclip.server.access")
    r = client.images.generate(prompt="a red star", size="64x64", quality="standard", user="end-user-42",
                               response_format="b64_json")
    assert len(r.data) == 1
    assert any('user="end-user-42"' in rec.getMessage() for rec in caplog.records)
    _expect(lambda: client.images.generate(prompt="a red star", size="64x64", quality="hd"), 400, "invalid_value",
            "quality")


def test_no_size_gets_the_largest_size_the_pipeline_makes(client):
    r = client.images.generate(prompt="a red star", response_format="b64_json")  # this pipeline stops at 256
    assert image_of(r.data[0]).size == (256, 256)


def test_a_default_size_the_pipeline_cannot_make_is_warned_at_start(pipeline_dir, key_file, caplog):
    from unclip.server import ServerConfig

    from .conftest import FAST, serve
    caplog.set_level(logging.WARNING, logger="unclip.server")
    config = ServerConfig(pipeline_dir=pipeline_dir, settings=FAST, moderation=False, api_keys_file=key_file,
                          api_keys_env="UNCLIP_NO_SUCH_VAR", default_size="1024x1024")
    with serve(config) as url:
        assert httpx.get(f"{url}/health").status_code == 200
    assert "default size 1024x1024 is not one this pipeline makes" in caplog.text
