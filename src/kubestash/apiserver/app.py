"""HTTP routing for the bundled API server: Kubernetes REST paths onto :class:`ObjectManager`.

Paths, query parameters, content types and response shapes follow
kube-apiserver closely enough that kubectl, client-go style clients and
lightkube cannot tell the difference for the verbs KubeStash needs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import yaml
from aiohttp import web

from kubestash.apiserver import discovery, openapi, protobuf, tables
from kubestash.apiserver.errors import ApiError, bad_request
from kubestash.apiserver.gc import GarbageCollector
from kubestash.apiserver.objects import ObjectManager, PatchType, Propagation, WriteOptions
from kubestash.apiserver.patch import ApplyConflict, PatchError
from kubestash.apiserver.resources import ResourceRegistry, ResourceType
from kubestash.apiserver.security import token_matches
from kubestash.apiserver.selectors import SelectorError, parse_field_selector, parse_label_selector
from kubestash.apiserver.store import Event, Gone, Store

log = logging.getLogger(__name__)

PATCH_TYPES: dict[str, PatchType] = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "apply",
}
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")
BOOKMARK_INTERVAL = 10.0
DEFAULT_WATCH_TIMEOUT = 1800.0


@dataclass
class ServerState:
    store: Store
    registry: ResourceRegistry
    manager: ObjectManager
    gc: GarbageCollector
    token: str | None
    address: str = "127.0.0.1"


STATE_KEY = web.AppKey("state", ServerState)


@dataclass(frozen=True)
class Target:
    rt: ResourceType
    namespace: str
    name: str
    subresource: str | None


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _status_response(err: ApiError) -> web.Response:
    return _json(err.status(), err.code)


# ------------------------------------------------------------------ middleware
@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return _status_response(err)
    except ApplyConflict as err:
        body = ApiError(409, "Conflict", err.message).status()
        body["details"] = {"causes": err.causes()}
        return _json(body, 409)
    except PatchError as err:
        return _status_response(ApiError(err.code, _reason(err.code), err.message))
    except SelectorError as err:
        return _status_response(bad_request(str(err)))
    except web.HTTPException:
        raise
    except Exception as exc:  # never a traceback to the client
        log.exception("internal error on %s %s", request.method, request.path)
        return _status_response(ApiError(500, "InternalError", f"Internal error occurred: {type(exc).__name__}"))


def _reason(code: int) -> str:
    return {400: "BadRequest", 404: "NotFound", 409: "Conflict", 415: "UnsupportedMediaType"}.get(code, "Invalid")


@web.middleware
async def _auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    token = state.token
    if (
        token is not None
        and request.path not in PUBLIC_PATHS
        and not token_matches(request.headers.get("Authorization"), token)
    ):
        return _status_response(ApiError(401, "Unauthorized", "Unauthorized"))
    return await handler(request)


# ------------------------------------------------------------------ discovery
async def _version(request: web.Request) -> web.Response:
    return _json(discovery.version_info())


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _api(request: web.Request) -> web.Response:
    return _json(discovery.api_versions(request.app[STATE_KEY].address))


async def _apis(request: web.Request) -> web.Response:
    return _json(discovery.api_group_list(request.app[STATE_KEY].registry))


async def _openapi_root(request: web.Request) -> web.Response:
    return _json(openapi.openapi_v3_root(request.app[STATE_KEY].registry.all()))


# An OpenAPI v2 document holding no definitions, in gnostic protobuf (swagger "2.0", info "kubestash").
# kubectl falls back to it when a kind has no v3 schema (a custom kind before its CRD is installed);
# with no definition to validate against it lets the request through, and the user sees the real
# "no matches for kind" error instead of a validation failure.
_EMPTY_OPENAPI_V2 = b"\x0a\x032.0\x12\x15\x0a\x09kubestash\x12\x08v1.0.0-0"


async def _openapi_v2(request: web.Request) -> web.Response:
    return web.Response(
        body=_EMPTY_OPENAPI_V2, content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    )


async def _openapi_gv(request: web.Request) -> web.Response:
    registry = request.app[STATE_KEY].registry
    parts = request.match_info["tail"].strip("/").split("/")
    if parts[0] == "api" and len(parts) == 2:
        group, version = "", parts[1]
    elif parts[0] == "apis" and len(parts) == 3:
        group, version = parts[1], parts[2]
    else:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    types = [rt for rt in registry.all() if rt.group == group and rt.version == version]
    if not types:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return _json(openapi.openapi_v3_group_version(types))


# ------------------------------------------------------------------ resources
def _parse_target(registry: ResourceRegistry, group: str, version: str, parts: list[str]) -> Target | None:
    """Map the path after ``/api/v1`` or ``/apis/g/v`` to a resource, namespace, name, subresource."""
    namespace = ""
    if len(parts) >= 3 and parts[0] == "namespaces" and not (len(parts) == 3 and parts[2] in ("status", "finalize")):
        namespace, parts = parts[1], parts[2:]
    if not parts or len(parts) > 3:
        return None
    rt = registry.get(group, version, parts[0])
    if rt is None:
        return None
    if namespace and not rt.namespaced:
        return None
    name = parts[1] if len(parts) > 1 else ""
    sub = parts[2] if len(parts) > 2 else None
    if sub is not None and not (sub == "status" and rt.status_subresource):
        return None
    return Target(rt, namespace, name, sub)


async def _resource(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    tail = request.match_info["tail"].strip("/").split("/")
    if request.path.startswith("/api/"):
        if len(tail) == 1:
            listing = discovery.api_resource_list(state.registry, "", tail[0])
            if listing is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(listing)
        group, version, rest = "", tail[0], tail[1:]
    else:
        if len(tail) == 1:
            doc = discovery.api_group(state.registry, tail[0])
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(doc)
        if len(tail) == 2:
            listing = discovery.api_resource_list(state.registry, tail[0], tail[1])
            if listing is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(listing)
        group, version, rest = tail[0], tail[1], tail[2:]
    target = _parse_target(state.registry, group, version, rest)
    if target is None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    method = request.method
    if not target.name:
        if method == "GET":
            if _flag(request, "watch"):
                return await _watch(request, state, target)
            return await _list(request, state, target)
        if method == "POST":
            return await _create(request, state, target)
        if method == "DELETE":
            return await _delete_collection(request, state, target)
        raise web.HTTPMethodNotAllowed(method, ["GET", "POST", "DELETE"])
    if method == "GET":
        obj = state.manager.get(target.rt, target.namespace, target.name)
        return _object_response(request, target.rt, obj)
    if method == "PUT":
        return await _update(request, state, target)
    if method == "PATCH":
        return await _patch(request, state, target)
    if method == "DELETE" and target.subresource is None:
        return await _delete(request, state, target)
    raise web.HTTPMethodNotAllowed(method, ["GET", "PUT", "PATCH", "DELETE"])


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1")


def _wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "as=Table" in accept


def _object_response(
    request: web.Request, rt: ResourceType, obj: dict[str, Any], status: int = 200, warnings: tuple[str, ...] = ()
) -> web.Response:
    headers = {"Warning": ", ".join(f'299 - "{w}"' for w in warnings)} if warnings else None
    if _wants_table(request):
        return _json(tables.to_table(rt, [obj], include_object=_include_object(request)), status, headers)
    return _json(obj, status, headers)


def _include_object(request: web.Request) -> str:
    value = request.query.get("includeObject", "Metadata")
    return value if value in ("None", "Metadata", "Object") else "Metadata"


def _write_options(request: web.Request) -> WriteOptions:
    manager = request.query.get("fieldManager") or request.headers.get("User-Agent", "").split("/")[0]
    validation = request.query.get("fieldValidation", "Warn")
    if validation not in ("Strict", "Warn", "Ignore"):
        raise bad_request(f"fieldValidation must be one of Strict, Warn, Ignore, not {validation!r}")
    return WriteOptions(
        dry_run=request.query.get("dryRun") == "All",
        field_manager=manager,
        field_validation=validation,  # type: ignore[arg-type]
    )


async def _read_body(request: web.Request, *, yaml_ok: bool = True) -> Any:
    raw = await request.read()
    if not raw:
        raise bad_request("the request body is empty")
    content_type = request.content_type
    if content_type == "application/vnd.kubernetes.protobuf":
        try:
            return protobuf.decode(raw)
        except protobuf.ProtobufError as exc:
            raise ApiError(415, "UnsupportedMediaType", str(exc)) from None
    if "protobuf" in content_type or "cbor" in content_type:
        raise ApiError(
            415, "UnsupportedMediaType", f"the body of the request was in an unsupported format: {content_type}"
        )
    try:
        if content_type.endswith("yaml") and yaml_ok:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"the request body could not be decoded: {exc}") from None


async def _create(request: web.Request, state: ServerState, target: Target) -> web.Response:
    body = await _read_body(request)
    result = state.manager.create(target.rt, target.namespace, body, _write_options(request))
    return _object_response(request, target.rt, result.obj, 201, result.warnings)


async def _update(request: web.Request, state: ServerState, target: Target) -> web.Response:
    body = await _read_body(request)
    result = state.manager.update(
        target.rt, target.namespace, target.name, body, _write_options(request), subresource=target.subresource
    )
    return _object_response(request, target.rt, result.obj, 200, result.warnings)


async def _patch(request: web.Request, state: ServerState, target: Target) -> web.Response:
    patch_type = PATCH_TYPES.get(request.content_type)
    if patch_type is None:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: "
            + ", ".join(PATCH_TYPES),
        )
    body = await _read_body(request)
    result = state.manager.patch(
        target.rt,
        target.namespace,
        target.name,
        patch_type,
        body,
        _write_options(request),
        subresource=target.subresource,
        force=_flag(request, "force"),
    )
    return _object_response(request, target.rt, result.obj, 201 if result.created else 200, result.warnings)


async def _delete_options(request: web.Request) -> tuple[Propagation | None, dict[str, Any], bool]:
    options: dict[str, Any] = {}
    if request.can_read_body:
        raw = await request.read()
        if raw.strip():
            try:
                options = json.loads(raw)
            except ValueError:
                raise bad_request("DeleteOptions could not be decoded") from None
    propagation = request.query.get("propagationPolicy") or options.get("propagationPolicy")
    if options.get("orphanDependents") is True:
        propagation = "Orphan"
    if propagation not in (None, "Background", "Foreground", "Orphan"):
        raise bad_request(f"propagationPolicy {propagation!r} is not one of Background, Foreground, Orphan")
    dry_run = request.query.get("dryRun") == "All" or options.get("dryRun") == ["All"]
    preconditions: dict[str, Any] = options.get("preconditions") or {}
    return cast(Propagation | None, propagation), preconditions, dry_run


async def _delete(request: web.Request, state: ServerState, target: Target) -> web.Response:
    propagation, preconditions, dry_run = await _delete_options(request)
    obj = state.manager.delete(
        target.rt, target.namespace, target.name, propagation=propagation, preconditions=preconditions, dry_run=dry_run
    )
    return _json(obj, 200)


def _selected(request: web.Request, state: ServerState, target: Target) -> list[dict[str, Any]]:
    items = state.store.list_objects(target.rt.key, target.namespace or None if target.rt.namespaced else None)
    labels = parse_label_selector(request.query.get("labelSelector", ""))
    fields = parse_field_selector(request.query.get("fieldSelector", ""))
    return [o for o in items if labels.matches(o["metadata"].get("labels") or {}) and fields.matches(o)]


async def _delete_collection(request: web.Request, state: ServerState, target: Target) -> web.Response:
    propagation, _, dry_run = await _delete_options(request)
    deleted = []
    for obj in _selected(request, state, target):
        meta = obj["metadata"]
        deleted.append(
            state.manager.delete(
                target.rt, meta.get("namespace") or "", meta["name"], propagation=propagation, dry_run=dry_run
            )
        )
    return _json(_list_body(target.rt, deleted, state.store.resource_version, ""))


def _list_body(rt: ResourceType, items: list[dict[str, Any]], rv: int, token: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if token:
        meta["continue"] = token
    return {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta, "items": items}


async def _list(request: web.Request, state: ServerState, target: Target) -> web.Response:
    items = _selected(request, state, target)
    rv = state.store.resource_version
    token = request.query.get("continue", "")
    if token:
        try:
            position = json.loads(base64.urlsafe_b64decode(token.encode()))
            start_rv, after = int(position["rv"]), tuple(position["after"])
        except (ValueError, KeyError, TypeError):
            raise bad_request("the provided continue parameter is invalid") from None
        if start_rv < state.store.compacted:
            raise ApiError(
                410, "Expired", "The provided continue parameter is too old to display a consistent list result."
            )
        items = [o for o in items if (o["metadata"].get("namespace") or "", o["metadata"]["name"]) > after]
        rv = start_rv
    limit = int(request.query.get("limit") or 0)
    next_token = ""
    remaining = 0
    if limit and len(items) > limit:
        remaining = len(items) - limit
        items = items[:limit]
        last = items[-1]["metadata"]
        next_token = base64.urlsafe_b64encode(
            json.dumps({"rv": rv, "after": [last.get("namespace") or "", last["name"]]}).encode()
        ).decode()
    if _wants_table(request):
        return _json(
            tables.to_table(
                target.rt,
                items,
                include_object=_include_object(request),
                resource_version=str(rv),
                continue_token=next_token,
            )
        )
    body = _list_body(target.rt, items, rv, next_token)
    if remaining:
        body["metadata"]["remainingItemCount"] = remaining
    return _json(body)


async def _watch(request: web.Request, state: ServerState, target: Target) -> web.StreamResponse:
    labels = parse_label_selector(request.query.get("labelSelector", ""))
    fields = parse_field_selector(request.query.get("fieldSelector", ""))
    namespace = target.namespace or None if target.rt.namespaced else None
    timeout = float(request.query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
    bookmarks = _flag(request, "allowWatchBookmarks")
    as_table = _wants_table(request)
    since = request.query.get("resourceVersion", "")
    initial_events = _flag(request, "sendInitialEvents")
    # Subscribe and read history without awaiting in between: no write can slip through.
    sub = state.store.subscribe(target.rt.key, namespace)
    error: dict[str, Any] | None = None
    backlog: list[Event] = []
    try:
        if since in ("", "0") or initial_events:
            rv = state.store.resource_version
            backlog = [
                Event("ADDED", target.rt.key, o["metadata"].get("namespace") or "", rv, o)
                for o in state.store.list_objects(target.rt.key, namespace)
            ]
        else:
            backlog = state.store.events_since(target.rt.key, namespace, int(since))
    except Gone as exc:
        error = ApiError(410, "Expired", str(exc)).status()
    except ValueError:
        state.store.unsubscribe(sub)
        raise bad_request(f"invalid resourceVersion {since!r}") from None
    last_rv = max([e.rv for e in backlog], default=int(since) if since.isdigit() else state.store.resource_version)
    response = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-cache"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    first_table = True

    async def send(event_type: str, obj: dict[str, Any]) -> None:
        nonlocal first_table
        if as_table and event_type not in ("ERROR", "BOOKMARK"):
            obj = tables.to_table(target.rt, [obj], include_object=_include_object(request), with_columns=first_table)
            first_table = False
        line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":")) + "\n"
        await response.write(line.encode())

    def wanted(event: Event) -> bool:
        return labels.matches(event.obj["metadata"].get("labels") or {}) and fields.matches(event.obj)

    try:
        if error is not None:
            await send("ERROR", error)
            return response
        for event in backlog:
            if wanted(event):
                await send(event.type, event.obj)
        if initial_events:
            # The "watch list" protocol: a bookmark marks the end of the initial state.
            await send(
                "BOOKMARK",
                {
                    "kind": target.rt.kind,
                    "apiVersion": target.rt.api_version,
                    "metadata": {
                        "resourceVersion": str(last_rv),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                },
            )
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                next_event = await asyncio.wait_for(sub.queue.get(), min(remaining, BOOKMARK_INTERVAL))
            except TimeoutError:
                if bookmarks:
                    await send(
                        "BOOKMARK",
                        {
                            "kind": target.rt.kind,
                            "apiVersion": target.rt.api_version,
                            "metadata": {"resourceVersion": str(max(last_rv, state.store.resource_version))},
                        },
                    )
                continue
            if next_event is None:
                break
            if next_event.rv <= last_rv:
                continue
            last_rv = next_event.rv
            if wanted(next_event):
                await send(next_event.type, next_event.obj)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        state.store.unsubscribe(sub)
    return response


def build_app(state: ServerState) -> web.Application:
    app = web.Application(middlewares=[_errors, _auth], client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = state
    app.router.add_get("/version", _version)
    for path in PUBLIC_PATHS[1:]:
        app.router.add_get(path, _healthz)
    app.router.add_get("/api", _api)
    app.router.add_get("/apis", _apis)
    app.router.add_get("/openapi/v2", _openapi_v2)
    app.router.add_get("/openapi/v3", _openapi_root)
    app.router.add_get("/openapi/v3/{tail:.+}", _openapi_gv)
    app.router.add_route("*", "/api/{tail:.+}", _resource)
    app.router.add_route("*", "/apis/{tail:.+}", _resource)
    return app
