"""uvicorn's h11 protocol with a header timeout: a connection that does not finish sending a request's
headers within `header_timeout_s` of opening (or of its previous response) is closed.

uvicorn times out idle keep-alive connections but not slow headers: a client trickling one header byte at
a time ("slowloris") holds a connection for ever, since every byte cancels the keep-alive timer. Pass
``http=header_timeout_protocol(seconds)`` to ``uvicorn.run`` / ``uvicorn.Config`` (sample/serve.py does).
"""
from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class _HeaderTimeoutH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # a request's headers are complete: the app's timeouts apply
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE or self.conn.their_state is h11.DONE:
            self._disarm()
            self._arm()  # the next request's headers get the same time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def header_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """An h11 protocol class closing connections whose request headers take more than `seconds`."""
    return type("HeaderTimeoutH11Protocol", (_HeaderTimeoutH11Protocol,), {"header_timeout_s": float(seconds)})
