"""Admission for HookTemplate: an executor, and exactly one action it can run."""

from __future__ import annotations

from kubestash.api.admission.common import check_usage_selector
from kubestash.api.admission.errors import FieldError, forbidden, invalid, not_supported, required
from kubestash.api.admission.lookup import Lookup
from kubestash.api.hooks import HookTemplate, HTTPGetAction, TCPSocketAction
from kubestash.api.shared import UsagePolicy

_ACTIONS = ("exec", "httpGet", "httpPost", "tcpSocket")
_SCHEMES = ("HTTP", "HTTPS")


def default_hook_template(obj: HookTemplate) -> None:
    if obj.spec.usage_policy is None:
        obj.spec.usage_policy = UsagePolicy()


def validate_hook_template(obj: HookTemplate, old: HookTemplate | None, lookup: Lookup) -> list[FieldError]:
    spec = obj.spec
    errors = check_usage_selector(spec.usage_policy)
    executor = spec.executor
    if executor is None:
        return [*errors, required("spec.executor", "executor is required")]
    if executor.type is None:
        errors.append(required("spec.executor.type", "one of Function, Pod, Operator"))
    if executor.type == "Function" and (executor.function is None or not executor.function.name):
        errors.append(required("spec.executor.function.name", "the Function to run the hook in"))
    if executor.type == "Pod":
        errors += _check_pod_selector(executor.pod.selector if executor.pod else None)
    if spec.action is None:
        if executor.type != "Function":
            errors.append(required("spec.action", f"action is required for executor type {executor.type}"))
        return errors
    written = spec.action.to_wire()
    chosen = [name for name in _ACTIONS if written.get(name) is not None]
    if not chosen:
        errors.append(required("spec.action", "one of exec, httpGet, httpPost, tcpSocket"))
    for name in chosen[1:]:
        errors.append(forbidden(f"spec.action.{name}", f"only one action may be set (already have {chosen[0]})"))
    action = spec.action
    if action.exec is not None and not action.exec.command:
        errors.append(required("spec.action.exec.command", "the command to execute"))
    for name, probe in (("httpGet", action.http_get), ("httpPost", action.http_post), ("tcpSocket", action.tcp_socket)):
        if probe is not None:
            errors += _check_port(probe, f"spec.action.{name}")
    for name, http in (("httpGet", action.http_get), ("httpPost", action.http_post)):
        if http is not None and http.scheme is not None and http.scheme not in _SCHEMES:
            errors.append(not_supported(f"spec.action.{name}.scheme", http.scheme, _SCHEMES))
    return errors


def _check_pod_selector(selector: str | None) -> list[FieldError]:
    path = "spec.executor.pod.selector"
    if not selector:
        return [required(path, "pod selector is required for executor type Pod")]
    for pair in selector.split(","):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            return [invalid(path, f'"{selector}": must be comma-separated key=value pairs')]
    return []


def _check_port(probe: HTTPGetAction | TCPSocketAction, path: str) -> list[FieldError]:
    port = probe.port
    if isinstance(port, int) and not 1 <= port <= 65535:
        return [invalid(f"{path}.port", f"{port}: must be between 1 and 65535, inclusive")]
    if isinstance(port, str) and not port:
        return [required(f"{path}.port")]
    return []
