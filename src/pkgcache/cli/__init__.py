"""The `pkgcache` command: one click group, its commands in rooms by job.

- `service_commands`: serve, start, stop, restart
- `status_commands`: status, logs
- `setup_commands`: init, client-config
- `check`: check (probing the upstreams)
- `admin_commands`: gc, purge, refresh, verify
- `kit_commands`: seed, export, import (the offline kit)
- `policy_commands`: block, unblock, policy check|show (the supply-chain policy)
- `options` (the shared options, and settings from them) and `locate` (which instance a command means)

The console script and `python -m pkgcache` both run `pkgcache.cli:main`.
"""

from __future__ import annotations

import importlib

import click

from pkgcache import __version__

# Command name -> "module:attribute". A command's module is imported only when that command runs, so that
# `pkgcache serve` (and every worker forked from it) does not carry the offline kit's and the policy tools' imports.
COMMANDS = {
    "serve": "service_commands:serve",
    "start": "service_commands:start",
    "stop": "service_commands:stop",
    "restart": "service_commands:restart",
    "status": "status_commands:status",
    "logs": "status_commands:logs",
    "init": "setup_commands:init",
    "client-config": "setup_commands:client_config",
    "check": "check:check_command",
    "gc": "admin_commands:gc_command",
    "purge": "admin_commands:purge_command",
    "refresh": "admin_commands:refresh_command",
    "verify": "admin_commands:verify_command",
    "seed": "kit_commands:seed",
    "export": "kit_commands:export_command",
    "import": "kit_commands:import_command",
    "block": "policy_commands:block_command",
    "unblock": "policy_commands:unblock_command",
    "policy": "policy_commands:policy_group",
}


class _LazyGroup(click.Group):
    """click's group, finding each command in its module when it is asked for (click's lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, attribute = where.split(":")
        command: click.Command = getattr(importlib.import_module(f"pkgcache.cli.{module}"), attribute)
        return command


@click.group(cls=_LazyGroup)
@click.version_option(__version__, prog_name="pkgcache")
def main() -> None:
    """pkgcache: a caching proxy for PyPI and conda on your network."""
