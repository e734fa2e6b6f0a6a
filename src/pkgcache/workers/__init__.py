"""Several serving processes on one port, sharing one cache.

- `supervisor.py`: the process `pkgcache stop` signals. It binds the port, forks the workers, restarts one that
  dies, and stops them all; it runs no event loop and no threads, so forking from it is safe.
- Worker 0, the primary, is the whole service: it alone fetches from upstreams and writes the cache, so
  single-flight downloads, revalidation, eviction and the admin API work exactly as in a single process.
- The other workers, the replicas, answer from what the cache holds (fresh pages, cached files) and hand every
  other request to the primary over a private socket (`forwarding.py`), relaying its answer.
- `shared_counters.py`: each worker's request counters, in shared memory, summed by the primary for the stats, and
  the primary's own counters, which a restarted primary starts from.
- `gate_sync.py`: the generation of the blocks in force, which every worker follows and says it has applied, so that
  a block's API call answers once every worker has it in force.
- `worker_app.py`: what a worker adds to the aiohttp application.
"""
