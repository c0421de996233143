"""The one error type for bad caller input (a leaf module: models, pipeline, moderation and the server import it)."""
from __future__ import annotations


class InputError(ValueError):
    """A bad argument to a pipeline entry point. ``param`` names it ("prompt", "image", "mask", "size",
    "n", "settings", ...); the message says what was expected. The Images API maps it to HTTP 400."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message
