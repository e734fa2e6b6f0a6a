"""Bundles of cached content for carrying across an air gap: `pkgcache export` writes one, `pkgcache import` reads it.

- `manifest`: the bundle's format (a tar, its manifest first) and the checks on its paths;
- `selection`: which cached files go in (all, since a time, what lock files name) with the index files serving them;
- `exporting`: hashing and writing; `importing`: reading, checking against the manifest and the indexes, merging;
- `index_hashes`: what a page, repodata or shard says a package must hash to.
"""
