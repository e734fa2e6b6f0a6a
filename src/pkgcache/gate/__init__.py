"""The gate: what clients are let to see and fetch, whatever the side (issue 15's policy, issue 13's offline view).

- `refusals.py`: the HTTP answers of the gate (403 with the reason in the status line, 404 when offline, 503 for
  what is not held while every upstream is down); `misses.py`: the words of the last two;
- `blocks.py`: instant blocks kept in the data directory, with their log;
- `first_seen.py`: when pkgcache first saw a file, for files whose index gives no release time;
- `offline.py`: the pool that never sends (offline mode) and when a side's upstreams are all down;
- `state.py`: `Gate`, each side's policy and offline state as every worker sees it: a block or unblock is in force
  on every worker when its API call returns (workers/gate_sync.py).

The side layers (`pypi/filtered_index.py`, `conda/filtered_channels.py`) filter by predicates made from it.
"""
