# pkgcache in a container. With compose (compose.yaml beside this file): `docker compose up -d`, `docker compose down`.
# By hand:
#   docker build -t pkgcache .
#   docker run -d -p 3150:3150 -v pkgcache-data:/data pkgcache
#
# Build arguments (all optional):
#   BASE_IMAGE        any Debian-like image with Python 3.11+ and its venv module (Debian: python3 and python3-venv);
#                     scripts/test_container builds on a Debian base made with mmdebstrap
#   PIP_INDEX_URL     where pip fetches pkgcache's dependencies, e.g. https://pypi.tuna.tsinghua.edu.cn/simple/
#                     (unset: pip's own default)
#   PIP_TRUSTED_HOST  the host of a plain-http index, e.g. another pkgcache on the LAN
#   PIP_CERT          a CA bundle's path inside the build, for a podman build that mounts one:
#                       podman build -v /etc/ssl/certs:/etc/ssl/certs:ro \
#                         --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt .
# Behind a proxy that intercepts TLS, hand pip the proxy's CA bundle as the build secret `ca_bundle` instead
# (BuildKit, `docker compose build` and podman all take it):
#   docker build --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt -t pkgcache .
# Nothing of the build host's pip configuration reaches the build but these.
ARG BASE_IMAGE=python:3.11-slim

# --- build: pkgcache and its dependencies in a virtual environment (Debian's Python refuses system-wide installs,
# PEP 668), copied alone into the image below.
FROM ${BASE_IMAGE} AS build
ARG PIP_INDEX_URL=
ARG PIP_TRUSTED_HOST=
ARG PIP_CERT=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore
COPY pyproject.toml README.md /build/
COPY src /build/src
# An empty build argument means "not given": unset, pip then uses its own default. Once pkgcache is in, what it
# never runs goes: pip and setuptools, and zstandard's CFFI backend (CPython loads its C backend; 12 MB).
RUN --mount=type=secret,id=ca_bundle \
    set -eu; \
    [ -n "$PIP_INDEX_URL" ] || unset PIP_INDEX_URL; \
    [ -n "$PIP_TRUSTED_HOST" ] || unset PIP_TRUSTED_HOST; \
    [ -n "$PIP_CERT" ] || unset PIP_CERT; \
    if [ -z "${PIP_CERT:-}" ] && [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi; \
    python3 -m venv /opt/pkgcache; \
    /opt/pkgcache/bin/pip install /build; \
    /opt/pkgcache/bin/pip uninstall --yes pip setuptools; \
    rm -f /opt/pkgcache/lib/python3*/site-packages/zstandard/_cffi.*.so

# --- the image: the base, one user, the environment.
FROM ${BASE_IMAGE}
# An unprivileged user owns the cache; nothing else in the image is writable by it.
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin pkgcache \
    && mkdir -p /data \
    && chown pkgcache:pkgcache /data
COPY --from=build /opt/pkgcache /opt/pkgcache
ENV PATH=/opt/pkgcache/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PKGCACHE_SERVER__DATA_DIR=/data \
    PKGCACHE_SERVER__PORT=3150
VOLUME ["/data"]
WORKDIR /data
EXPOSE 3150
USER pkgcache

# /-/health stays open even when reads need a password. No proxy: the check is for this container only.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:%s/-/health' % os.environ.get('PKGCACHE_SERVER__PORT', '3150'), timeout=4)"]

# SIGTERM is a graceful stop: no new connections, downloads in flight finish (up to 45 s), nothing partial is
# left in /data. compose.yaml gives it 90 s before the engine kills it (`docker stop` alone waits only 10 s).
STOPSIGNAL SIGTERM
CMD ["pkgcache", "serve", "--host", "0.0.0.0"]
