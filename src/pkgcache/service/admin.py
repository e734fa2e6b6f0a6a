"""The admin HTTP API under `/-/admin/`: purge cached entries, force an index refresh, run a collection.

Off unless `access.admin_token` is configured: every admin POST is then a 404 marked `X-Pkgcache-Admin: off`, so
that the command line can tell "the API is off" from a 404 an action gives (no such block). With a token, every
admin request must carry `Authorization: Bearer <token>` (401 without one, 403 with a wrong one). All are POST:
they change the cache. Answers are JSON.

    POST /-/admin/gc[?target=SIZE]                      evict to SIZE (default: 90 % of cache.max_size)
    POST /-/admin/pypi/purge/<project>                  a project's page and files
    POST /-/admin/pypi/purge/<project>/<filename>       one file (and its .metadata)
    POST /-/admin/pypi/refresh/<project>                fetch the project's page from upstream now
    POST /-/admin/conda/purge/<pkgs|cloud>/<channel>/<subdir>/<filename>   one conda package file
    POST /-/admin/<pypi|conda>/block?target=NAME==VERSION&reason=WHY&who=WHO   block a release (or a whole
                                                        project: target=NAME) on every worker, purge its files
    POST /-/admin/<pypi|conda>/unblock?target=NAME==VERSION&who=WHO         lift a block

A block or unblock is answered once every live worker has it in force (gate/state.py): the requests made after the
answer, whichever worker takes them, see no page listing a blocked file. A worker that has not said so within
APPLY_TIMEOUT is named in the answer's `workers_behind` (the block is made all the same, and in force elsewhere).
Blocking what is already blocked, for the same reason, changes nothing and adds no line to the log.

A request can reach the primary long after it was sent: it waited on a replica that was stopped or stuck, whose
client gave up. Two headers, which `pkgcache` sends, keep such a request from undoing what was done since:
`X-Pkgcache-Sent-At` (Unix time, the sender's clock) and `X-Pkgcache-Give-Up-At` (when the sender stops waiting).
An admin request that arrives past its give-up time is refused (409, nothing done), and a block or unblock sent
before the last change made to the same block (by this primary) is refused too (409): it is older than what is in
force.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from pydantic import ByteSize, TypeAdapter, ValidationError

from pkgcache.conda.channels import FileKind, UnknownPath, check_subdir, kind_of
from pkgcache.gate.blocks import BlockChange, BlocksUnreadable, block_from_target, block_key
from pkgcache.gate.purge import blocked_files
from pkgcache.gate.state import APPLY_TIMEOUT, GATE_KEY, Gate
from pkgcache.http.auth import admin_refusal
from pkgcache.http.request_cycle import add_post
from pkgcache.http.responses import error_for, plain_error
from pkgcache.policy.common import parse_block_target
from pkgcache.pypi.names import METADATA_SUFFIX, BadName, check_filename, normalize_project
from pkgcache.pypi.pages import project_entries
from pkgcache.pypi.routes import PYPI_INDEX_KEY
from pkgcache.service.state import Operations, operations
from pkgcache.storage.downloads import AfterDownload, Download
from pkgcache.storage.eviction import Freed
from pkgcache.storage.store import CacheStore, UnsafePath

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger(__name__)

ADMIN_ROOT = "/-/admin"
# On the 404 every admin path gets when the API is off: the mark clients match, not the wording.
ADMIN_STATE_HEADER = "X-Pkgcache-Admin"
ADMIN_OFF = "off"
SENT_AT_HEADER = "X-Pkgcache-Sent-At"
GIVE_UP_AT_HEADER = "X-Pkgcache-Give-Up-At"
# The primary's memory of when the change last made to each block was sent (block_key -> sender's time).
_LAST_SENT: web.AppKey[dict[tuple[str, str, object], float]] = web.AppKey("admin_last_sent", dict)
_SIZE = TypeAdapter(ByteSize)


def parse_size(text: str) -> int:
    """A size as the config file takes it ("10GB", "500MiB", "1048576"); raises ValueError."""
    try:
        return int(_SIZE.validate_python(text.strip()))
    except ValidationError:
        raise ValueError(f"{text!r} is not a size (try 10GB, 500MiB or a number of bytes)") from None


def _guarded(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        token = operations(request).settings.access.admin_token
        refusal = admin_refusal(request, token or "") or _given_up(request)
        return refusal if refusal is not None else await handler(request)

    return guarded


def _header_time(request: web.Request, name: str) -> float | None:
    try:
        value = float(request.headers.get(name, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None  # NaN and infinity are no time


def _given_up(request: web.Request) -> web.Response | None:
    """A 409 for a request whose sender said it stopped waiting before it arrived here."""
    give_up_at = _header_time(request, GIVE_UP_AT_HEADER)
    if give_up_at is None or time.time() <= give_up_at:
        return None
    log.warning(
        "admin %s %s arrived %.1f s after its sender gave up: not done",
        request.method,
        request.path_qs,
        time.time() - give_up_at,
    )
    return plain_error(409, "this request arrived after its sender stopped waiting for it: nothing was done")


def _older_than_last(request: web.Request, side: str, key: tuple[str, object], target: str) -> web.Response | None:
    """A 409 for a block or unblock sent before the last change made to the same block; else it is the last."""
    sent_at = _header_time(request, SENT_AT_HEADER)
    if sent_at is None:
        return None
    last = request.app[_LAST_SENT]
    full = (side, *key)
    if sent_at < last.get(full, float("-inf")):
        log.warning("admin %s %s was sent before the last change to it: not done", request.path, target)
        return plain_error(
            409, f"a later change to the {side} block of {target} was made since this request was sent: not done"
        )
    last[full] = sent_at
    return None


async def purge_holding(ops: Operations, paths: list[Path]) -> Freed:
    """Remove cache entries now, and what a download in flight into them brings once it lands: without this, a
    file whose download was under way when it was purged came back a moment later, though the purge said it went.
    Its clients still get their bytes (they hold the file open); the next request fetches it again."""
    freed = await ops.keeper.purge(paths)
    for download in ops.downloader.running_under(paths):
        if not download.before_done(_purge_once_landed(ops)):
            _purge_soon(ops, download.final_path)  # it ended between the purge and now
    return freed


def _purge_once_landed(ops: Operations) -> AfterDownload:
    async def purge(download: Download) -> None:
        if download.error is None and not download.not_modified:
            _purge_soon(ops, download.final_path)  # in a moment: the clients following it hold it open

    return purge


_LATE_PURGES: set[asyncio.Task[Freed]] = set()


def _purge_soon(ops: Operations, path: Path) -> None:
    task = asyncio.get_running_loop().create_task(ops.keeper.purge([path]))
    _LATE_PURGES.add(task)
    task.add_done_callback(_LATE_PURGES.discard)


def _freed_answer(freed: Freed, request: web.Request, **extra: object) -> web.Response:
    keeper = operations(request).keeper
    return web.json_response(
        {**extra, "freed_files": freed.files, "freed_bytes": freed.bytes, "cache_bytes": keeper.total_bytes}
    )


async def gc(request: web.Request) -> web.StreamResponse:
    keeper = operations(request).keeper
    target_text = request.query.get("target")
    try:
        target = None if target_text is None else parse_size(target_text)
    except ValueError as exc:
        return plain_error(400, str(exc))
    freed = await keeper.gc(target)
    return _freed_answer(
        freed, request, max_size=keeper.max_size, target=keeper.low_water() if target is None else target
    )


def _project(request: web.Request) -> str:
    try:
        return normalize_project(request.match_info["project"])
    except BadName as exc:
        raise web.HTTPBadRequest(text=f"refused project name: {exc}\n") from None


async def purge_pypi_project(request: web.Request) -> web.StreamResponse:
    ops = operations(request)
    project = _project(request)
    freed = await purge_holding(ops, project_entries(ops.store, project))
    # After the files are gone, so that a request reading the page back from disk meanwhile is forgotten too.
    request.app[PYPI_INDEX_KEY].forget(project)
    return _freed_answer(freed, request, project=project)


def pypi_file_entries(store: CacheStore, project: str, filename: str) -> list[Path]:
    """A cached file of a project, with its PEP 658 metadata file (which goes with it) unless it is one."""
    path = store.path_for("pypi", "files", project, filename)
    return [path] if filename.endswith(METADATA_SUFFIX) else [path, path.with_name(filename + METADATA_SUFFIX)]


async def purge_pypi_file(request: web.Request) -> web.StreamResponse:
    ops = operations(request)
    project = _project(request)
    try:
        filename = check_filename(request.match_info["filename"])
        paths = pypi_file_entries(ops.store, project, filename)
    except (BadName, UnsafePath) as exc:
        return plain_error(400, f"refused file name: {exc}")
    freed = await purge_holding(ops, paths)
    return _freed_answer(freed, request, project=project, filename=filename)


async def refresh_pypi_project(request: web.Request) -> web.StreamResponse:
    project = _project(request)
    try:
        entry = await request.app[PYPI_INDEX_KEY].refresh(project)
    except Exception as exc:
        response = error_for(exc)
        if response is None:
            raise
        return response
    return web.json_response({"project": project, "upstream": entry.upstream, "files": len(entry.page.files)})


def conda_package_path(request: web.Request) -> Path:
    """The cache path of a conda package named by an admin request; raises HTTPBadRequest/HTTPNotFound."""
    ops = operations(request)
    root, name = request.match_info["root"], request.match_info["name"]
    if f"{root}/{name}" not in ops.settings.conda.channels:
        raise web.HTTPNotFound(text=f"channel {root}/{name} is not served here\n")
    try:
        subdir = check_subdir(request.match_info["subdir"])
        filename = request.match_info["filename"]
        if kind_of(filename) is not FileKind.PACKAGE:
            raise UnknownPath(f"{filename!r} is an index file; those follow their time-to-live")
        return ops.store.path_for("conda", root, name, subdir, filename)
    except (UnknownPath, UnsafePath) as exc:
        raise web.HTTPBadRequest(text=f"refused path: {exc}\n") from None


async def purge_conda_file(request: web.Request) -> web.StreamResponse:
    path = conda_package_path(request)
    freed = await purge_holding(operations(request), [path])
    return _freed_answer(freed, request, file=str(path.relative_to(operations(request).store.root)))


def _side(request: web.Request) -> str:
    side = request.match_info["side"]
    if side not in operations(request).pools:
        raise web.HTTPNotFound(text=f"the {side} side is not served here\n")
    return side


def _who(request: web.Request) -> str:
    """Who asked: as the command line says (the user running it), else the address the request came from."""
    return request.query.get("who") or f"the admin API from {request.remote or 'an unknown address'}"


async def block(request: web.Request) -> web.StreamResponse:
    """Block a release (or every release of a project) now, on every worker, and purge its cached files."""
    side, ops, gate = _side(request), operations(request), request.app[GATE_KEY]
    try:
        made = block_from_target(side, request.query.get("target", ""), _who(request), request.query.get("reason", ""))
        if side == "conda":
            from pkgcache.policy.conda import CondaPolicy

            CondaPolicy(blocks=[made])  # a version conda cannot read is refused here, not when serving
    except ValueError as exc:
        return plain_error(400, str(exc))
    stale = _older_than_last(request, side, block_key(side, made.name, made.version), made.target)
    if stale is not None:
        return stale
    try:
        kept = await asyncio.to_thread(gate.book.add, side, made)
    except BlocksUnreadable as exc:
        return plain_error(409, str(exc))
    behind = await _in_force_everywhere(gate, f"the {side} block of {made.target}")
    freed = await ops.keeper.purge(await asyncio.to_thread(blocked_files, ops.store, side, made))
    change = BlockChange("block", side, kept, made.who, freed.files, freed.bytes)
    if kept is made:  # the same block already in force (a call repeated after a lost answer) is not logged again
        await asyncio.to_thread(gate.book.record, change)
    made = kept
    log.warning("%s block: %s (purged %d cached files)", side, made.describe(), freed.files)
    return web.json_response({**made.as_json(), "side": side, **change.as_json(), "workers_behind": behind})


async def _in_force_everywhere(gate: Gate, what: str) -> list[dict[str, int]]:
    """Put the blocks file just written in force on every worker, waiting for them; those that did not say so."""
    behind = await gate.blocks_changed()
    for straggler in behind:
        log.error(
            "worker %d (pid %d) has not put %s in force within %g s: it may still serve what it changes",
            straggler.worker,
            straggler.pid,
            what,
            APPLY_TIMEOUT,
        )
    return [{"worker": straggler.worker, "pid": straggler.pid} for straggler in behind]


async def unblock(request: web.Request) -> web.StreamResponse:
    side, gate = _side(request), request.app[GATE_KEY]
    try:
        name, version = parse_block_target(request.query.get("target", ""))
    except ValueError as exc:
        return plain_error(400, str(exc))
    stale = _older_than_last(request, side, block_key(side, name, version), request.query.get("target", ""))
    if stale is not None:
        return stale
    try:
        removed = await asyncio.to_thread(gate.book.remove, side, name, version)
    except BlocksUnreadable as exc:
        return plain_error(409, str(exc))
    if removed is None:
        target = name if version is None else f"{name}=={version}"
        return plain_error(404, f"no {side} block of {target} is in force")
    behind = await _in_force_everywhere(gate, f"the {side} unblock of {removed.target}")
    who = _who(request)
    change = BlockChange("unblock", side, removed, who)
    await asyncio.to_thread(gate.book.record, change)
    log.warning("%s unblock: %s by %s", side, removed.target, who)
    return web.json_response({**removed.as_json(), "side": side, **change.as_json(), "workers_behind": behind})


async def admin_off(request: web.Request) -> web.StreamResponse:
    return plain_error(
        404,
        "the admin API is off here: this instance was started without access.admin_token",
        **{ADMIN_STATE_HEADER: ADMIN_OFF},
    )


def add_admin_routes(app: web.Application, token: str | None, *, pypi: bool, conda: bool) -> None:
    """Mount the admin API when a token is configured; without one, a marked 404 on every admin path."""
    if token is None:
        add_post(app, ADMIN_ROOT + r"/{tail:[\s\S]*}", admin_off)
        return
    app[_LAST_SENT] = {}
    add_post(app, f"{ADMIN_ROOT}/gc", _guarded(gc))
    if pypi:
        add_post(app, f"{ADMIN_ROOT}/pypi/purge/{{project}}", _guarded(purge_pypi_project))
        add_post(app, f"{ADMIN_ROOT}/pypi/purge/{{project}}/{{filename}}", _guarded(purge_pypi_file))
        add_post(app, f"{ADMIN_ROOT}/pypi/refresh/{{project}}", _guarded(refresh_pypi_project))
    if conda:
        add_post(app, f"{ADMIN_ROOT}/conda/purge/{{root}}/{{name}}/{{subdir}}/{{filename}}", _guarded(purge_conda_file))
    if pypi or conda:
        add_post(app, f"{ADMIN_ROOT}/{{side}}/block", _guarded(block))
        add_post(app, f"{ADMIN_ROOT}/{{side}}/unblock", _guarded(unblock))
