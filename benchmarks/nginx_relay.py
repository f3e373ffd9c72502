"""nginx as a peer relay, for the benchmarks: Debian's nginx reverse-proxying a loopback
upstream the way a careful deployment would put it in front of an OpenAI-compatible
server (HTTP/1.1 kept-alive connections to the upstream, no buffering of the streamed
answer). It does what starchart's relay does at the HTTP level and nothing else: no
parsing, no keys, no metrics. Run from its own temporary prefix, stopped afterwards."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server_process import free_port

from starchart.bench.own_server import server_process

NGINX = "/usr/sbin/nginx"

_CONF = """\
worker_processes 1;
error_log stderr warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    upstream model {{ server {upstream}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {upstream};  # starchart answers only its own Host
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def available() -> bool:
    return Path(NGINX).is_file() or shutil.which("nginx") is not None


@contextmanager
def nginx_relay(upstream_url: str) -> Iterator[str]:
    """Yield the URL of an nginx relaying to ``upstream_url`` (``http://host:port``), once
    it relays (the upstream's ``/v1/models`` through it answers 200); stopped after."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="starchart-nginx-") as prefix:
        conf = Path(prefix) / "nginx.conf"
        conf.write_text(_CONF.format(prefix=prefix, port=port,
                                     upstream=upstream_url.removeprefix("http://")))
        Path(prefix, "body").mkdir()
        Path(prefix, "proxy").mkdir()
        Path(prefix).chmod(0o755)  # the worker runs as nobody when started as root
        with server_process([shutil.which("nginx") or NGINX, "-p", prefix, "-c", str(conf),
                             "-g", "daemon off;"], f"http://127.0.0.1:{port}",
                            log=Path(prefix) / "nginx.log", ready_path="/v1/models",
                            timeout=10) as url:
            yield url
