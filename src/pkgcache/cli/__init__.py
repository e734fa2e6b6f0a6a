"""The `pkgcache` command: one click group, its commands in rooms by job.

- `service_commands`: serve, start, stop, restart
- `status_commands`: status, logs
- `setup_commands`: init, client-config
- `check`: check (probing the upstreams)
- `admin_commands`: gc, purge, refresh
- `kit_commands`: seed, export, import (the offline kit)
- `policy_commands`: block, unblock, policy check|show (the supply-chain policy)
- `options` (the shared options, and settings from them) and `locate` (which instance a command means)

The console script and `python -m pkgcache` both run `pkgcache.cli:main`.
"""

from __future__ import annotations

import click

from pkgcache import __version__
from pkgcache.cli.admin_commands import gc_command, purge_command, refresh_command
from pkgcache.cli.check import check_command
from pkgcache.cli.kit_commands import export_command, import_command, seed
from pkgcache.cli.policy_commands import block_command, policy_group, unblock_command
from pkgcache.cli.service_commands import restart, serve, start, stop
from pkgcache.cli.setup_commands import client_config, init
from pkgcache.cli.status_commands import logs, status


@click.group()
@click.version_option(__version__, prog_name="pkgcache")
def main() -> None:
    """pkgcache: a caching proxy for PyPI and conda on your network."""


COMMANDS = (
    serve,
    start,
    stop,
    restart,
    status,
    logs,
    init,
    client_config,
    check_command,
    gc_command,
    purge_command,
    refresh_command,
    seed,
    export_command,
    import_command,
    block_command,
    unblock_command,
    policy_group,
)
for command in COMMANDS:
    main.add_command(command)
