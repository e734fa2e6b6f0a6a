"""Start pkgcache with one experimental change applied from outside src/, to measure a choice before (or after)
making it.

    python -m bench.pkgcache_variant VARIANT serve --config FILE

VARIANT is one of:
  asis          no change (the same as the `pkgcache` command)
  asyncio-loop  asyncio's own event loop instead of uvloop (whose sendfile pkgcache adds)
  gc-off        the cyclic garbage collector disabled before the workers are forked (they inherit it)
Settings such as `server.workers` and `server.log_level` are varied through the config file instead.
"""

from __future__ import annotations

import asyncio
import gc
import sys


def apply(variant: str) -> None:
    if variant == "asyncio-loop":
        from pkgcache.service import serving

        serving.new_event_loop = asyncio.new_event_loop  # type: ignore[assignment]
    elif variant == "gc-off":
        gc.disable()
    elif variant != "asis":
        raise SystemExit(f"unknown variant {variant!r}")


def main() -> None:
    variant, *rest = sys.argv[1:]
    apply(variant)
    from pkgcache.cli import main as pkgcache_main

    sys.argv = ["pkgcache", *rest]
    pkgcache_main()


if __name__ == "__main__":
    main()
