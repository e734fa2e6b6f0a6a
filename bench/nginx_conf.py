"""nginx configurations: the static upstream, and the proxy_cache ceiling in front of it."""

from __future__ import annotations

import os
from pathlib import Path

HERD_RATE = "10m"  # bytes/s per connection for /slow/ (nginx's m = MiB): a fast internet mirror, not loopback


def _common(prefix: Path, access_log: Path) -> str:
    # As root, workers would otherwise run as nobody and could not read the work tree.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes auto;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    types {{ application/octet-stream whl bz2 conda zst metadata; }}
    default_type application/octet-stream;
    log_format bench '$msec $request_method $uri $status $body_bytes_sent $request_time';
    access_log {access_log} bench;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
"""


def upstream_conf(prefix: Path, root: Path, port: int, access_log: Path) -> str:
    """The local upstream: the prepared tree as static files; herd files at a limited rate."""
    return (
        _common(prefix, access_log)
        + f"""
    server {{
        listen 127.0.0.1:{port} reuseport;
        root {root};
        location /simple/ {{ index index.html; }}
        location /slow/ {{ limit_rate {HERD_RATE}; }}
        location /conda/ {{ gzip_static on; }}
    }}
}}
"""
    )


def cache_conf(prefix: Path, port: int, upstream_port: int, access_log: Path) -> str:
    """nginx as a caching proxy: what a careful admin would write (cache lock for herds, stale while updating)."""
    return (
        _common(prefix, access_log)
        + f"""
    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=bench:64m max_size=20g inactive=7d use_temp_path=off;
    upstream local_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host 127.0.0.1:{upstream_port};
        # One cached form per URL: the identity encoding.
        proxy_set_header Accept-Encoding "";
        proxy_cache bench;
        proxy_cache_lock on;
        proxy_cache_lock_timeout 300s;
        proxy_cache_lock_age 300s;
        proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
        proxy_cache_background_update on;
        proxy_cache_revalidate on;
        add_header X-Cache-Status $upstream_cache_status;
        location = /-/health {{ return 200 "ok\\n"; }}
        location /simple/ {{
            proxy_pass http://local_upstream;
            proxy_cache_valid 200 301 302 10m;
        }}
        location /conda/ {{
            proxy_pass http://local_upstream;
            proxy_cache_valid 200 5m;
        }}
        location / {{
            proxy_pass http://local_upstream;
            proxy_cache_valid 200 365d;
        }}
    }}
}}
"""
    )


def mirror_conf(prefix: Path, root: Path, port: int, access_log: Path) -> str:
    """A TUNA-like mirror: static pages and files, Range on (nginx's default), every byte sent logged.

    `$bytes_sent` counts headers and body as they left nginx, including a download cut short by the client.
    """
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    types {{ application/octet-stream whl; text/html html; }}
    default_type application/octet-stream;
    log_format mirror '$msec $request_method $uri $status $bytes_sent "$http_range"';
    access_log {access_log} mirror;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /simple/ {{ index index.html; }}
    }}
}}
"""


def drip_conf(prefix: Path, root: Path, port: int, access_log: Path, rate: int) -> str:
    """The bench's upstream tree sent at `rate` bytes/s per connection: a mirror that throttles or is failing."""
    return (
        _common(prefix, access_log)
        + f"""
    server {{
        listen 127.0.0.1:{port};
        root {root};
        limit_rate {rate};
        location /simple/ {{ index index.html; }}
    }}
}}
"""
    )


def single_process_conf(prefix: Path, root: Path, port: int, access_log: Path) -> str:
    """The static upstream as one process (no master): what valgrind counts, or a pinned single worker."""
    single = "worker_processes 1;\nmaster_process off;\n"
    common = _common(prefix, access_log).replace("worker_processes auto;\n", single)
    return (
        common
        + f"""
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /simple/ {{ index index.html; }}
    }}
}}
"""
    )
