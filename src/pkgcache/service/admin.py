"""The admin HTTP API under `/-/admin/`: purge cached entries, force an index refresh, run a collection.

Off unless `access.admin_token` is configured: the routes do not exist (404). With a token, every admin request
must carry `Authorization: Bearer <token>` (401 without one, 403 with a wrong one). All are POST: they change
the cache. Answers are JSON.

    POST /-/admin/gc[?target=SIZE]                      evict to SIZE (default: 90 % of cache.max_size)
    POST /-/admin/pypi/purge/<project>                  a project's page and files
    POST /-/admin/pypi/purge/<project>/<filename>       one file (and its .metadata)
    POST /-/admin/pypi/refresh/<project>                fetch the project's page from upstream now
    POST /-/admin/conda/purge/<pkgs|cloud>/<channel>/<subdir>/<filename>   one conda package file
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from pydantic import ByteSize, TypeAdapter, ValidationError

from pkgcache.conda.channels import FileKind, UnknownPath, check_subdir, kind_of
from pkgcache.http.auth import admin_refusal
from pkgcache.http.request_cycle import add_post
from pkgcache.http.responses import error_for, plain_error
from pkgcache.pypi.names import METADATA_SUFFIX, BadName, check_filename, normalize_project
from pkgcache.pypi.pages import project_entries
from pkgcache.pypi.routes import PYPI_INDEX_KEY
from pkgcache.service.state import operations
from pkgcache.storage.eviction import Freed
from pkgcache.storage.store import CacheStore, UnsafePath

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ADMIN_ROOT = "/-/admin"
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
        refusal = admin_refusal(request, token or "")
        return refusal if refusal is not None else await handler(request)

    return guarded


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
    freed = await ops.keeper.purge(project_entries(ops.store, project))
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
    freed = await ops.keeper.purge(paths)
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
    freed = await operations(request).keeper.purge([path])
    return _freed_answer(freed, request, file=str(path.relative_to(operations(request).store.root)))


def add_admin_routes(app: web.Application, token: str | None, *, pypi: bool, conda: bool) -> None:
    """Mount the admin API when a token is configured; without one it does not exist."""
    if token is None:
        return
    add_post(app, f"{ADMIN_ROOT}/gc", _guarded(gc))
    if pypi:
        add_post(app, f"{ADMIN_ROOT}/pypi/purge/{{project}}", _guarded(purge_pypi_project))
        add_post(app, f"{ADMIN_ROOT}/pypi/purge/{{project}}/{{filename}}", _guarded(purge_pypi_file))
        add_post(app, f"{ADMIN_ROOT}/pypi/refresh/{{project}}", _guarded(refresh_pypi_project))
    if conda:
        add_post(app, f"{ADMIN_ROOT}/conda/purge/{{root}}/{{name}}/{{subdir}}/{{filename}}", _guarded(purge_conda_file))
