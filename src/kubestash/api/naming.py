"""Names of the objects KubeStash generates, identical to KubeStash's so they can be found by name.

Long names are shortened the kmodules way: keep the first half and the last
half of ``prefix-name-suffix`` (63 characters for objects, 52 for CronJobs,
whose Jobs append 11 more). Keeping the tail preserves the timestamp that
makes session names unique.
"""

from __future__ import annotations

import re

DNS1123_LABEL_MAX = 63
CRONJOB_NAME_MAX = 52

TRIGGER_PREFIX = "trigger"
VERIFIER_TRIGGER_PREFIX = "trigger-verifier"
CLEANUP_PREFIX = "cleanup"


def valid_name_with_prefix(prefix: str, name: str, max_length: int = DNS1123_LABEL_MAX) -> str:
    return f"{prefix}-{name}"[:max_length].strip("-")


def valid_name_with_prefix_n_suffix(prefix: str, name: str, suffix: str, max_length: int = DNS1123_LABEL_MAX) -> str:
    out = f"{prefix}-{name}-{suffix}"
    if len(out) <= max_length:
        return out.strip("-")
    return (out[: (max_length + 1) // 2] + out[len(out) - max_length // 2 :]).strip("-")


def backup_session_name(invoker: str, session: str, unix_seconds: int) -> str:
    """``<backupconfiguration>-<session>-<unix>``."""
    return valid_name_with_prefix_n_suffix(invoker, session, str(unix_seconds))


_SESSION_SUFFIX = re.compile(r"(.*)-([0-9]+)$")


def snapshot_name(repository: str, backup_session: str) -> str:
    """``<repository>-<backupconfiguration>-<session>-<unix>`` from the BackupSession's name."""
    match = _SESSION_SUFFIX.match(backup_session)
    if match is None:
        return valid_name_with_prefix_n_suffix(repository, backup_session, "")
    return valid_name_with_prefix_n_suffix(repository, match.group(1), match.group(2))


def verification_session_name(session: str, repository: str, unix_seconds: int) -> str:
    """``<session>-<repository>-<unix>``, the order KubeStash's own objects show."""
    return valid_name_with_prefix_n_suffix(session, repository, str(unix_seconds))


def trigger_cronjob_name(invoker: str, session: str) -> str:
    return valid_name_with_prefix_n_suffix(TRIGGER_PREFIX, invoker, session, CRONJOB_NAME_MAX)


def verifier_cronjob_name(invoker: str, repository: str) -> str:
    return valid_name_with_prefix_n_suffix(VERIFIER_TRIGGER_PREFIX, invoker, repository, CRONJOB_NAME_MAX)


def storage_cleanup_job_name(backup_storage: str) -> str:
    return valid_name_with_prefix(CLEANUP_PREFIX, backup_storage)


def component_path(session: str, component: str, version: str = "v1") -> str:
    """Restic repository of one component, relative to the Repository path."""
    return f"repository/{version}/{session}/{component}"


def auto_backup_configuration_name(kind: str, name: str, target_namespace: str, bc_namespace: str) -> str:
    """BackupConfiguration a BackupBlueprint creates for an annotated target."""
    if target_namespace == bc_namespace:
        return valid_name_with_prefix(kind.lower(), name)
    return valid_name_with_prefix_n_suffix(target_namespace, kind.lower(), name)
