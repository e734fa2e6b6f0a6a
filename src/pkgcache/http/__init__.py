"""The HTTP face of pkgcache: the aiohttp application, its middlewares and the shared ways to answer."""
