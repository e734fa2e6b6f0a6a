"""`pkgcache seed` at work: the plan `pkgcache.seed` reads, resolved and fetched through a pkgcache over HTTP.

- `targets`: platforms and Python versions, in conda's and uv's names; virtual packages for conda solves;
- `resolve`: exact files from lock files, uv for requirements without hashes, rattler for conda specs;
- `fetch`: a bounded number of transfers through pkgcache's URLs, with rich progress bars;
- `run`: the whole seed and its report.
"""
