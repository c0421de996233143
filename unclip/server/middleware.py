"""Body-size limit and request log, as one pure ASGI middleware (it must see the raw body stream).

The limit is enforced before anything is decoded or kept: a Content-Length over it is answered 413, and a
body without one (chunked) is counted as it streams and refused at the limit. Before answering, the rest
of an over-limit body is read and thrown away (up to `_DRAIN_FACTOR` × the limit, for at most
`_DRAIN_SECONDS`): a client still writing its body when the server answers and closes would otherwise get
a broken connection instead of the 413 (HTTP/1.1 clients read the answer only after sending). A client
that sent `Expect: 100-continue` is answered at once, and never sends the body.
A body that stops arriving (no bytes for `body_timeout_s`) is answered 408. The log line has method,
path, status, latency and image count — never headers (keys), never prompts
unless the server is configured to log them; download tokens in paths are elided."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time

from starlette.requests import ClientDisconnect

from .errors import APIError

log = logging.getLogger("unclip.server.access")
errors_log = logging.getLogger("unclip.server.errors")
_FILE_PATH = re.compile(r"^(/v1/images/files/)[^/]+$")
_DRAIN_FACTOR = 4  # read and discard at most this many times the limit of an over-limit body
_DRAIN_SECONDS = 5.0


async def _drain(receive, budget: int) -> None:
    """Read and discard the rest of a request body: at most `budget` bytes, for at most _DRAIN_SECONDS."""
    async def loop():
        nonlocal budget
        while budget > 0:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            budget -= len(message.get("body", b""))
    try:
        await asyncio.wait_for(loop(), _DRAIN_SECONDS)
    except asyncio.TimeoutError:
        pass


def _too_large(limit: int) -> APIError:
    return APIError(413, f"Request body too large: the limit is {limit} bytes.", code="request_too_large")


def _too_slow(seconds: float) -> APIError:
    return APIError(408, f"The request body did not arrive: no bytes for {seconds:g} s.", code="request_timeout")


class LimitAndLogMiddleware:
    def __init__(self, app, max_request_bytes: int, body_timeout_s: float | None = None) -> None:
        self.app, self.limit, self.body_timeout = app, max_request_bytes, body_timeout_s

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
            if state.get("user") is not None:
                extra += f" user={json.dumps(state['user'])}"
            if state.get("prompt") is not None:  # only set when prompt logging is configured
                extra += f" prompt={json.dumps(state['prompt'])}"
            log.info("%s %s %d %.1fms images=%d%s", scope["method"], path, status["code"],
                     1000 * (time.perf_counter() - t0), state.get("images", 0), extra)

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                write_log()  # before the last byte leaves: the line is written by the time the client has the answer
            await send(message)

        try:
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.limit):
                if headers.get(b"expect", b"").lower() != b"100-continue":
                    await _drain(receive, _DRAIN_FACTOR * self.limit)
                await self._send_error(_too_large(self.limit), send_wrapper)
                return
            seen = 0

            body_done = False

            async def receive_counting():
                nonlocal seen, body_done
                if body_done or self.body_timeout is None:
                    message = await receive()
                else:  # a client that stops sending its body is answered 408, not waited for forever
                    try:
                        message = await asyncio.wait_for(receive(), self.body_timeout)
                    except asyncio.TimeoutError:
                        raise _too_slow(self.body_timeout) from None
                body_done = body_done or message["type"] != "http.request" or not message.get("more_body", False)
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > self.limit:
                        if message.get("more_body", False):
                            await _drain(receive, _DRAIN_FACTOR * self.limit)
                        raise _too_large(self.limit)  # handled by the app's APIError handler
                return message

            try:
                await self.app(scope, receive_counting, send_wrapper)
            except Exception as exc:  # noqa: BLE001 — answered here, so the access log has the real status
                await self._unhandled(exc, scope, status, send_wrapper)
        finally:
            if not status["logged"]:
                write_log()

    @classmethod
    async def _unhandled(cls, exc: Exception, scope, status: dict, send) -> None:
        """An exception no handler answered: a client that went away is logged in one line; anything else is
        logged with its traceback and answered 500 in the API's error shape (not re-raised, so the server
        does not log it a second time)."""
        if isinstance(exc, ClientDisconnect) or (isinstance(exc, OSError) and status["code"]):
            errors_log.info("%s %s: client disconnected (%s)", scope["method"], scope["path"], type(exc).__name__)
            return
        errors_log.error("unhandled error on %s %s", scope["method"], scope["path"], exc_info=exc)
        if status["code"] == 0:  # nothing sent yet: the client gets the API's 500
            await cls._send_error(APIError(500, "The server had an error while processing your request.",
                                           type="server_error"), send)

    @staticmethod
    async def _send_error(err: APIError, send) -> None:
        body = json.dumps(err.body()).encode()
        await send({"type": "http.response.start", "status": err.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
