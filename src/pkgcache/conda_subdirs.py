"""The conda subdirs pkgcache knows, a leaf below the conda side: the config model checks names against them, and
it may not import the conda side (which stands above it and imports the config)."""

from __future__ import annotations

# The subdirs conda knows (its KNOWN_SUBDIRS, with rattler's additions). Only these are asked for upstream, so
# invented ones cost neither a request nor a remembered 404 on disk.
KNOWN_SUBDIRS = frozenset(
    {
        "noarch",
        "emscripten-wasm32",
        "wasi-wasm32",
        "freebsd-64",
        "linux-32",
        "linux-64",
        "linux-aarch64",
        "linux-armv6l",
        "linux-armv7l",
        "linux-ppc64",
        "linux-ppc64le",
        "linux-riscv32",
        "linux-riscv64",
        "linux-s390x",
        "osx-64",
        "osx-arm64",
        "win-32",
        "win-64",
        "win-arm64",
        "zos-z",
    }
)
