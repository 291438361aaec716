"""Objects the operator and the CLI create alike, so a triggered backup looks the same whoever triggers it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubestash.api.naming import backup_session_name

CORE_GROUP = "core.kubestash.com"
MANAGED_BY = "kubestash.com"
MANAGED_BY_LABELS = {"app.kubernetes.io/managed-by": MANAGED_BY}
LABEL_INVOKER_NAME = "kubestash.com/invoker-name"
LABEL_INVOKER_NAMESPACE = "kubestash.com/invoker-namespace"
LABEL_SESSION_NAME = "kubestash.com/session-name"


def backup_session_manifest(
    bc: Mapping[str, Any], session: str, unix_seconds: int, *, retry_left: int = 0
) -> dict[str, Any]:
    """The BackupSession KubeStash's ``trigger`` creates: same name, labels, invoker and controller owner."""
    meta = bc["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    return {
        "apiVersion": f"{CORE_GROUP}/v1alpha1",
        "kind": "BackupSession",
        "metadata": {
            "name": backup_session_name(name, session, unix_seconds),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": MANAGED_BY,
                LABEL_INVOKER_NAME: name,
                LABEL_INVOKER_NAMESPACE: namespace,
                LABEL_SESSION_NAME: session,
            },
            "ownerReferences": [
                {
                    "apiVersion": f"{CORE_GROUP}/v1alpha1",
                    "kind": "BackupConfiguration",
                    "name": name,
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "invoker": {"apiGroup": CORE_GROUP, "kind": "BackupConfiguration", "name": name},
            "session": session,
            **({"retryLeft": retry_left} if retry_left else {}),
        },
    }
