"""Second servers for the browser tests (a restart, a server with CLIP).

``tests/conftest.py`` has the originals, but this folder's own conftest
shadows that module name for imports; ``type(live_server)`` gives its class.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
