"""PNG (and not-PNG) uploads for the server tests."""

from __future__ import annotations

import base64
import io

import httpx
from PIL import Image


def png_bytes(size=(64, 64), mode="RGBA", hole=True, noise=False) -> bytes:
    """A PNG; RGBA ones have a fully transparent square (the area to edit) when `hole`."""
    if noise:
        img = Image.frombytes(mode, size, bytes((i * 7919) % 251 for i in range(size[0] * size[1] * len(mode))))
    else:
        img = Image.new(mode, size, (200, 40, 40, 255)[: len(mode)] if len(mode) > 1 else 128)
    if mode == "RGBA" and hole:
        img.paste((0, 0, 0, 0), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 10)).save(buf, format="JPEG")
    return buf.getvalue()


def big_png_bytes(min_bytes: int) -> bytes:
    """A real, square, incompressible RGBA PNG of at least `min_bytes`."""
    import os

    side = int((min_bytes / 4) ** 0.5) + 16
    img = Image.frombytes("RGBA", (side, side), os.urandom(side * side * 4))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=0)
    assert buf.tell() > min_bytes
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG"
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def image_of(item) -> Image.Image:
    """The PNG behind one `data` entry of a response, by URL (downloaded) or b64_json."""
    if item.b64_json is not None:
        assert item.url is None
        return decode(base64.b64decode(item.b64_json))
    assert item.url is not None
    r = httpx.get(item.url, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    return decode(r.content)
