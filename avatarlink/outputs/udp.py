"""UDP transport shared by the sinks: never blocks, never raises while streaming.

A connected, non-blocking UDP socket. Connecting lets the kernel report an ICMP "port unreachable"
(nobody listening at the receiver's port) as ``ECONNREFUSED`` on a later send; that, a full
socket buffer, or any other socket error is counted in :attr:`UdpTransport.errors` and logged once
(warning), then at debug level, so a receiver that is down never stops or slows the capture loop.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable

from avatarlink.errors import OutputError

log = logging.getLogger(__name__)

Datagram = bytes | bytearray | memoryview


class UdpTransport:
    """Sends datagrams to one ``host:port``.

    Attributes:
        target: ``"host:port"`` as given, for messages.
        packets_sent: datagrams the kernel accepted.
        bytes_sent: their total size.
        errors: datagrams that could not be sent (receiver down, buffer full, ...).
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = f"{host}:{port}"
        self.packets_sent = 0
        self.bytes_sent = 0
        self.errors = 0
        self._warned = False
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise OutputError(f"cannot resolve host {host!r} ({exc})") from exc
        last: OSError | None = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.connect(address)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            self._sock: socket.socket | None = sock
            return
        raise OutputError(f"cannot open UDP socket to {self.target} ({last})")

    def send(self, datagrams: Iterable[Datagram]) -> int:
        """Send each datagram; returns how many were sent. Errors are counted, never raised."""
        sock = self._sock
        if sock is None:
            raise OutputError(f"UDP output to {self.target} is closed")
        sent = 0
        for datagram in datagrams:
            try:
                self.bytes_sent += sock.send(datagram)
            except OSError as exc:
                self.errors += 1
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "cannot send to %s (%s); is the receiver running? "
                        "Streaming goes on; further errors are counted silently",
                        self.target,
                        exc.strerror or exc,
                    )
                else:
                    log.debug("send to %s failed: %s", self.target, exc)
                continue
            sent += 1
        self.packets_sent += sent
        return sent

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            if self.errors:
                log.info("%s: %d datagrams could not be sent", self.target, self.errors)
