"""Connection limits that must act before the application sees a request.

uvicorn's default HTTP protocol (httptools) accepts request headers of any size and
waits for them as long as a client likes, so one slow or bloated client can hold a
connection and memory indefinitely. This protocol refuses headers over
`max_header_bytes` with 431, and closes a connection whose request line and headers do
not arrive within `header_timeout_s` of its first byte (or of the connection, for an
idle new one). Bodies are bounded by the application (`BodyLimitMiddleware`).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_STATUS_LINES = {431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n"}


class _Refused(Exception):
    """Stops the parser once a response has been sent."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """httptools protocol with a header size limit and a header read timeout."""

    max_header_bytes = 16384
    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._refused = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._refuse(431, f"request headers exceed {self.max_header_bytes} bytes")

    def _refuse(self, status: int, detail: str) -> None:
        body = ('{"detail": "' + detail + '"}').encode()
        self.transport.write(
            _STATUS_LINES[status]
            + b"content-type: application/json\r\nconnection: close\r\n"
            + b"content-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        self.transport.close()
        self._refused = True
        raise _Refused(detail)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # a refusal already answered; the parser error is ours
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)


def limited_protocol(max_header_bytes: int, header_timeout_s: float) -> type:
    """A protocol class with these limits, for `uvicorn.run(http=...)`."""
    return type(
        "ConfiguredHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {"max_header_bytes": max_header_bytes, "header_timeout_s": header_timeout_s},
    )
