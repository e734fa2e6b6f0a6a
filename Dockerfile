# pkgcache in a container: `docker compose up -d` (see compose.yaml), or
#   docker build -t pkgcache . && docker run -d -p 3150:3150 -v pkgcache-data:/data pkgcache
# Not exercised by CI (no container engine on the build machines).
FROM python:3.11-slim

# Where pip fetches pkgcache's own dependencies while building; e.g.
#   docker build --build-arg PIP_INDEX_URL=https://pypi.tuna.tsinghua.edu.cn/simple/ .
ARG PIP_INDEX_URL
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN if [ -n "$PIP_INDEX_URL" ]; then export PIP_INDEX_URL; else unset PIP_INDEX_URL; fi \
    && pip install . \
    && rm -rf /build

# An unprivileged user owns the cache; nothing else in the image is writable by it.
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin pkgcache \
    && mkdir -p /data \
    && chown pkgcache:pkgcache /data
VOLUME ["/data"]
WORKDIR /data

# Environment variables override the config file; flags override both.
ENV PKGCACHE_SERVER__DATA_DIR=/data \
    PKGCACHE_SERVER__PORT=3150
EXPOSE 3150
USER pkgcache

# /-/health stays open even when reads need a password. No proxy: the check is for this container only.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:%s/-/health' % os.environ.get('PKGCACHE_SERVER__PORT', '3150'), timeout=4)"]

# SIGTERM is a graceful stop; give it time (compose.yaml sets stop_grace_period to match).
STOPSIGNAL SIGTERM
CMD ["pkgcache", "serve", "--host", "0.0.0.0"]
