"""A loopback TCP forwarder in front of an upstream, to see what reaches it.

It counts the connections it accepts (keep-alive: sequential requests should
reuse one) and keeps the bytes clients sent (the headers the upstream saw).
The upstream behind it is a real server; the tap only copies bytes.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit


class TcpTap:
    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        assert parts.hostname is not None and parts.port is not None
        self.target = (parts.hostname, parts.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = 0
        self._sent = bytearray()  # client -> upstream, all connections
        self.requests: list[tuple[int, str]] = []  # (connection number, request line)
        self.dropped: list[tuple[int, str]] = []  # see drop_next_reuse
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._drop_next_reuse = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def sent(self) -> bytes:
        with self._lock:
            return bytes(self._sent)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self.accepted += 1
                self._open += [client, upstream]
                number = self.accepted
            threading.Thread(target=self._pipe, args=(client, upstream, number),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None),
                             daemon=True).start()

    def drop_next_reuse(self) -> None:
        """The next request sent on a connection that already carried one is not
        passed on: the connection closes instead, as when a server's keep-alive
        timeout closes it just as the client sends (the request was never read)."""
        with self._lock:
            self._drop_next_reuse = True

    def _pipe(self, source: socket.socket, sink: socket.socket, number: int | None) -> None:
        """Copy one direction; ``number`` (the connection's) when it is the client's."""
        carried = 0  # requests this connection has carried
        try:
            while data := source.recv(65536):
                if number is not None:
                    with self._lock:
                        line = data.split(b"\r\n", 1)[0].decode("latin-1")
                        if line.endswith(" HTTP/1.1"):
                            if carried and self._drop_next_reuse:
                                self._drop_next_reuse = False
                                self.dropped.append((number, line))
                                break
                            carried += 1
                            self.requests.append((number, line))
                        self._sent += data
                sink.sendall(data)
        except OSError:
            pass
        finally:  # one side closed: close both, as a direct connection would be
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for sock in self._open:
                sock.close()
