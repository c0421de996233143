"""Uploaded PNGs in, PNGs out: every check the API makes on `image` and `mask`, in the order that
costs least (size, signature, header dimensions, then decoding), and the final resize/encode."""

from __future__ import annotations

import io
import struct

from PIL import Image

from .errors import invalid

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALPHA_MODES = ("RGBA", "LA", "L")  # what the API accepts as a mask-carrying image (its error message lists these)


def _png_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the IHDR chunk, read without decoding anything."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def decode_png(data: bytes, param: str, *, max_bytes: int, max_side: int, max_pixels: int | None = None) -> Image.Image:
    """Check an upload and decode it fully; every failure is a 400 naming `param`."""
    if len(data) >= max_bytes:
        raise invalid(f"Uploaded {param} must be a PNG and less than {max_bytes / 2**20:g} MB "
                      f"(got {len(data)} bytes).", param, "image_too_large")
    if not data.startswith(PNG_SIGNATURE):
        kind = "a JPEG" if data[:3] == b"\xff\xd8\xff" else "not a PNG"
        raise invalid(f"Invalid input {param}: the file is {kind}; it must be a valid PNG file.",
                      param, "invalid_image_format")
    wh = _png_header_size(data)
    if wh is None:
        raise invalid(f"Invalid input {param}: the PNG has no valid header.", param, "invalid_image")
    if max(wh) > max_side or min(wh) < 1:
        raise invalid(f"Invalid input {param}: {wh[0]}x{wh[1]} pixels; each side must be 1..{max_side}.",
                      param, "invalid_image")
    if max_pixels is not None and wh[0] * wh[1] > max_pixels:
        raise invalid(f"Invalid input {param}: {wh[0]}x{wh[1]} pixels is more than this server decodes "
                      f"({max_pixels} pixels, e.g. {int(max_pixels ** 0.5)}x{int(max_pixels ** 0.5)}).", param,
                      "image_too_large")
    try:
        img = Image.open(io.BytesIO(data), formats=["PNG"])
        img.load()  # decodes every pixel: a truncated or corrupt file fails here, not later in the model
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, zlib errors ... for bad files
        raise invalid(f"Invalid input {param}: the PNG could not be decoded ({type(e).__name__}: {e}).",
                      param, "invalid_image") from None
    if img.width != img.height:
        raise invalid(f"Invalid input {param}: it must be square, got {img.width}x{img.height}.",
                      param, "image_not_square")
    return img


def has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def alpha_of(img: Image.Image) -> Image.Image:
    """The transparency of `img` as an 'L' image (255 = opaque). The API lists 'L' among the mask formats:
    a grey image is read as the alpha itself (0 = transparent)."""
    if img.mode == "L":
        return img
    return img.convert("RGBA").getchannel("A")


def edit_mask(image: Image.Image, mask: Image.Image | None) -> Image.Image:
    """The API's edit mask as an 'L' image: 0 where the image is to be edited (fully transparent), 255 elsewhere.

    Without `mask`, the image's own alpha is the mask, so the image must carry one (API: RGBA, LA or L)."""
    if mask is None:
        if not has_alpha(image) and image.mode != "L":
            raise invalid(f"Invalid input image - format must be in {list(ALPHA_MODES)}, got {image.mode}. "
                          "Without a mask the image's transparent pixels mark the area to edit.",
                          "image", "invalid_image_mode")
        source, param = image, "image"
    else:
        if mask.size != image.size:
            raise invalid(f"Invalid input mask: its size {mask.width}x{mask.height} must match the image's "
                          f"{image.width}x{image.height}.", "mask", "mask_size_mismatch")
        if not has_alpha(mask) and mask.mode != "L":
            raise invalid(f"Invalid input mask - format must be in {list(ALPHA_MODES)}, got {mask.mode}. "
                          "Its fully transparent pixels mark the area to edit.", "mask", "invalid_image_mode")
        source, param = mask, "mask"
    alpha = alpha_of(source)
    keep = alpha.point(lambda a: 0 if a == 0 else 255)  # only *fully* transparent pixels are edited
    if keep.getextrema()[0] != 0:
        raise invalid(f"Invalid input {param}: it has no fully transparent pixels, so there is nothing to edit.",
                      param, "empty_mask")
    return keep


def resize_to(img: Image.Image, side: int) -> Image.Image:
    """Antialiased (Lanczos) resize to side x side; identity when already there."""
    if img.size == (side, side):
        return img
    return img.resize((side, side), Image.Resampling.LANCZOS, reducing_gap=None)


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=4)
    return buf.getvalue()
