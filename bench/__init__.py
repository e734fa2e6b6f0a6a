"""pkgcache's benchmark harness: a local upstream, pkgcache and its peers on loopback, the issue-5 scenarios.

Run it with `bash bench/run` (or `bash bench/run --quick`); it writes bench/results.json and BENCHMARKS.md.
"""
