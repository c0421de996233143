"""Body-size limit and request log, as one pure ASGI middleware (it must see the raw body stream).

The limit is enforced before anything is decoded: a Content-Length over it is answered 413 without
reading a byte, and a body without one (chunked) is counted as it streams and cut off at the limit.
The log line has method, path, status, latency and image count — never headers (keys), never prompts
unless the server is configured to log them; download tokens in paths are elided."""

from __future__ import annotations

import json
import logging
import re
import time

from .errors import APIError

log = logging.getLogger("unclip.server.access")
_FILE_PATH = re.compile(r"^(/v1/images/files/)[^/]+$")


def _too_large(limit: int) -> APIError:
    return APIError(413, f"Request body too large: the limit is {limit} bytes.", code="request_too_large")


class LimitAndLogMiddleware:
    def __init__(self, app, max_request_bytes: int) -> None:
        self.app, self.limit = app, max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        state = scope.setdefault("state", {})
        status = {"code": 0, "logged": False}

        def write_log():
            status["logged"] = True
            path = _FILE_PATH.sub(r"\1…", scope["path"])
            extra = ""
            if state.get("prompt") is not None:  # only set when prompt logging is configured
                extra = f" prompt={json.dumps(state['prompt'])}"
            log.info("%s %s %d %.1fms images=%d%s", scope["method"], path, status["code"],
                     1000 * (time.perf_counter() - t0), state.get("images", 0), extra)

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                write_log()  # before the last byte leaves: the line is written by the time the client has the answer
            await send(message)

        try:
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.limit):
                await self._send_error(_too_large(self.limit), send_wrapper)
                return
            seen = 0

            async def receive_counting():
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > self.limit:
                        raise _too_large(self.limit)  # handled by the app's APIError handler
                return message

            await self.app(scope, receive_counting, send_wrapper)
        finally:
            if not status["logged"]:
                write_log()

    @staticmethod
    async def _send_error(err: APIError, send) -> None:
        body = json.dumps(err.body()).encode()
        await send({"type": "http.response.start", "status": err.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
