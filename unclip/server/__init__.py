"""An HTTP server compatible with the OpenAI Images API (dall-e-2 contract) over an UnCLIPPipeline.

See docs/api.md; start it with `python sample/serve.py PIPELINE_DIR`."""

from .app import create_app
from .config import ServerConfig
from .errors import APIError

__all__ = ["APIError", "ServerConfig", "create_app"]
