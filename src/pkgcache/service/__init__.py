"""The top of pkgcache: the application assembled from the sides and the shared layers, the operator's pages
(the page at /, stats, metrics, the admin API) and running the service in one process or several."""
