"""Running pkgcache in the background, one room per job.

- `files`: where an instance keeps its files (all in its data directory), and small JSON files written safely.
- `processes`: whether a pid is alive, and whether it is pkgcache.
- `lock`: the pid file a serving process holds locked for its whole life, the runtime file beside it, and what
  those two say about an instance (running, stale, held from elsewhere).
- `lifecycle`: starting a detached `serve` and waiting until it answers; stopping it.
- `launch_record`: the settings `start` resolved, recorded for the `serve` it launches and for `restart`.
- `registry`: the instances this account started, so commands given no directory can find them.
- `status_client`: asking a running instance over HTTP (`/-/health`, `/-/status`).
- `logs`: the log file of a background instance: rotating, tailing, following.
- `errors`: what goes wrong, in words an admin can act on.

Nothing here knows click: the commands in `pkgcache.cli` turn these into words and exit statuses.
"""
