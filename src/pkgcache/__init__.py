"""pkgcache: a caching proxy for Python packages and conda channels."""

__version__ = "0.1.0"
