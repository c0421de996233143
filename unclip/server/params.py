"""Request fields -> a validated ImageRequest, with the API's rules and an error naming each bad field.

JSON bodies (generations) carry typed values; multipart forms (edits, variations) carry strings — the
official client sends n=2 as the form field "2" — so each rule takes both."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from .config import API_SIZES, EXTENSION_SIZES
from .errors import invalid

MAX_PROMPT_CHARS = 1000
MAX_N = 10
RESPONSE_FORMATS = ("url", "b64_json")
COMMON_FIELDS = ("n", "size", "response_format", "user", "model")
FIELDS = {
    "generate": ("prompt", "quality") + COMMON_FIELDS,
    "edit": ("image", "mask", "prompt") + COMMON_FIELDS,
    "variation": ("image",) + COMMON_FIELDS,
}
_INT = re.compile(r"^\s*[+-]?\d+\s*$")


@dataclasses.dataclass
class ImageRequest:
    kind: str  # "generate" | "edit" | "variation"
    n: int
    size: int  # requested output side
    response_format: str
    prompt: str | None = None
    user: str | None = None


def size_name(side: int) -> str:
    return f"{side}x{side}"


def accepted_sizes(producible: tuple[int, ...]) -> list[int]:
    """The API sizes (plus 64, our extension) this pipeline answers. 512 is resized from 1024 (downscale,
    antialiased) or, without an sr1024 stage, from 256."""
    out = [s for s in EXTENSION_SIZES + API_SIZES if s in producible]
    if 512 not in out and (1024 in producible or 256 in producible):
        out.append(512)
    return sorted(out)


def source_size(side: int, producible: tuple[int, ...]) -> int:
    """The pipeline side an output of `side` is made from."""
    if side in producible:
        return side
    assert side == 512
    return 1024 if 1024 in producible else 256


def _reject_unknown(values: Mapping[str, Any], kind: str) -> None:
    for name in values:
        if name not in FIELDS[kind]:
            raise invalid(f"Unrecognized request argument supplied: {name}", name, "unknown_parameter")


def _string(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"{value!r} is not of type 'string' - '{name}'", name, "invalid_type")
    return value


def _int(value: Any, name: str, from_form: bool) -> int | None:
    if value is None or (from_form and value == ""):
        return None
    if from_form and isinstance(value, str) and _INT.match(value):
        return int(value)
    if not from_form and isinstance(value, int) and not isinstance(value, bool):
        return value
    raise invalid(f"{value!r} is not of type 'integer' - '{name}'", name, "invalid_type")


def parse(values: Mapping[str, Any], kind: str, *, from_form: bool, producible: tuple[int, ...],
          default_size: str, model_names: tuple[str, ...]) -> ImageRequest:
    """Validate the non-file fields of a request of `kind`."""
    _reject_unknown(values, kind)

    prompt = None
    if kind in ("generate", "edit"):
        prompt = _string(values.get("prompt"), "prompt")
        if prompt is None:
            raise invalid("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
        if not prompt.strip():
            raise invalid("'prompt' must not be empty.", "prompt", "empty_string")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise invalid(f"'prompt' is too long: {len(prompt)} characters, the maximum is {MAX_PROMPT_CHARS}.",
                          "prompt", "string_above_max_length")

    n = _int(values.get("n"), "n", from_form)
    n = 1 if n is None else n
    if n < 1:
        raise invalid(f"{n} is less than the minimum of 1 - 'n'", "n", "integer_below_min_value")
    if n > MAX_N:
        raise invalid(f"{n} is greater than the maximum of {MAX_N} - 'n'", "n", "integer_above_max_value")

    size_str = _string(values.get("size"), "size") or default_size
    api_names = [size_name(s) for s in EXTENSION_SIZES + API_SIZES]
    if size_str not in api_names:
        raise invalid(f"{size_str!r} is not one of {[size_name(s) for s in API_SIZES]} - 'size'",
                      "size", "invalid_value")
    side = int(size_str.split("x")[0])
    ok = accepted_sizes(producible)
    if side not in ok:
        raise invalid(f"This server's pipeline cannot make {size_str} images; it makes "
                      f"{[size_name(s) for s in ok]}.", "size", "unsupported_size")

    fmt = _string(values.get("response_format"), "response_format") or "url"
    if fmt not in RESPONSE_FORMATS:
        raise invalid(f"{fmt!r} is not one of {list(RESPONSE_FORMATS)} - 'response_format'",
                      "response_format", "invalid_value")

    model = _string(values.get("model"), "model")
    if model is not None and model not in model_names:
        raise invalid(f"The model {model!r} does not exist or is not served here; use one of {list(model_names)}.",
                      "model", "invalid_value")

    quality = _string(values.get("quality"), "quality")
    if quality is not None and quality != "standard":  # the API's only value for dall-e-2
        raise invalid(f"{quality!r} is not supported for dall-e-2: the only quality is 'standard'.", "quality",
                      "invalid_value")

    user = _string(values.get("user"), "user")
    return ImageRequest(kind=kind, n=n, size=side, response_format=fmt, prompt=prompt, user=user)
