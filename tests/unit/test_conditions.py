"""Condition list helpers: set/replace, transition times, truth tests, removal."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from kubestash.api import conditions as c
from kubestash.api.shared import Condition

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"
T2 = "2026-01-01T00:10:00Z"


def cond(type_: str, status: str, reason: str = "R", when: str = T0, **extra: object) -> Condition:
    return Condition.model_validate(
        {"type": type_, "status": status, "reason": reason, "lastTransitionTime": when, **extra}
    )


def test_set_condition_on_empty_list_adds_it() -> None:
    result = c.set_condition(None, c.BACKEND_INITIALIZED, True, c.REASON_BACKEND_INITIALIZATION_SUCCEEDED, now=T0)
    assert [x.to_wire() for x in result] == [
        {
            "type": "BackendInitialized",
            "status": "True",
            "reason": "BackendInitializationSucceeded",
            "lastTransitionTime": T0,
        }
    ]


def test_set_condition_bool_and_string_status() -> None:
    false = c.set_condition([], c.REPOSITORY_INITIALIZED, False, "RepositoryInitializationFailed", now=T0)
    unknown = c.set_condition([], c.REPOSITORY_INITIALIZED, "Unknown", "Waiting", now=T0)
    assert false[0].status == "False"
    assert unknown[0].status == "Unknown"


def test_set_condition_message_and_generation_are_written_only_when_given() -> None:
    plain = c.set_condition([], c.METRICS_PUSHED, True, c.REASON_SUCCESSFULLY_PUSHED_METRICS, now=T0)[0]
    assert "message" not in plain.to_wire()
    assert "observedGeneration" not in plain.to_wire()
    full = c.set_condition(
        [],
        c.METRICS_PUSHED,
        False,
        c.REASON_FAILED_TO_PUSH_METRICS,
        "pushgateway unreachable",
        observed_generation=3,
        now=T0,
    )[0]
    assert full.to_wire()["message"] == "pushgateway unreachable"
    assert full.to_wire()["observedGeneration"] == 3


def test_set_condition_appends_new_types_in_order() -> None:
    conds = c.set_condition(None, "A", True, "R", now=T0)
    conds = c.set_condition(conds, "B", True, "R", now=T0)
    conds = c.set_condition(conds, "C", False, "R", now=T0)
    assert [x.type for x in conds] == ["A", "B", "C"]


def test_set_condition_replaces_in_place() -> None:
    conds = [cond("A", "True"), cond("B", "True"), cond("C", "True")]
    result = c.set_condition(conds, "B", False, "Broken", "boom", now=T1)
    assert [x.type for x in result] == ["A", "B", "C"]
    assert result[1].status == "False"
    assert result[1].reason == "Broken"
    assert result[1].message == "boom"
    assert len([x for x in result if x.type == "B"]) == 1


def test_set_condition_does_not_mutate_its_input() -> None:
    conds = [cond("A", "True")]
    before = [x.model_copy(deep=True) for x in conds]
    c.set_condition(conds, "A", False, "Changed", now=T1)
    c.set_condition(conds, "B", True, "New", now=T1)
    assert conds == before


def test_transition_time_moves_when_status_changes() -> None:
    conds = c.set_condition(None, "Ready", True, "Ok", now=T0)
    conds = c.set_condition(conds, "Ready", False, "Broken", now=T1)
    assert conds[0].last_transition_time == T1
    conds = c.set_condition(conds, "Ready", True, "Ok", now=T2)
    assert conds[0].last_transition_time == T2


def test_transition_time_kept_when_status_unchanged_even_if_reason_changes() -> None:
    conds = c.set_condition(None, "Ready", True, "Ok", now=T0)
    conds = c.set_condition(conds, "Ready", True, "StillOk", "new message", now=T1)
    assert conds[0].last_transition_time == T0
    assert conds[0].reason == "StillOk"
    assert conds[0].message == "new message"


def test_repeating_a_reconcile_leaves_status_identical() -> None:
    first = c.set_condition(None, "Ready", True, "Ok", "all good", now=T0)
    second = c.set_condition(first, "Ready", True, "Ok", "all good", now=T1)
    assert [x.to_wire() for x in second] == [x.to_wire() for x in first]


def test_set_condition_defaults_to_current_utc_time() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    result = c.set_condition(None, "Ready", True, "Ok")
    after = datetime.now(UTC)
    stamp = result[0].last_transition_time
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)  # RFC 3339, seconds, UTC "Z"
    assert before <= datetime.fromisoformat(stamp) <= after


def test_get_and_has_condition() -> None:
    conds = [cond("A", "True"), cond("B", "False")]
    got = c.get_condition(conds, "B")
    assert got is not None
    assert got.status == "False"
    assert c.get_condition(conds, "Z") is None
    assert c.get_condition(None, "A") is None
    assert c.has_condition(conds, "A")
    assert not c.has_condition(conds, "Z")
    assert not c.has_condition(None, "A")


def test_is_true_and_is_false() -> None:
    conds = [cond("T", "True"), cond("F", "False"), cond("U", "Unknown")]
    assert c.is_condition_true(conds, "T")
    assert not c.is_condition_false(conds, "T")
    assert c.is_condition_false(conds, "F")
    assert not c.is_condition_true(conds, "F")
    # Unknown and absent are neither true nor false
    for type_ in ("U", "Missing"):
        assert not c.is_condition_true(conds, type_)
        assert not c.is_condition_false(conds, type_)
    assert not c.is_condition_true(None, "T")
    assert not c.is_condition_false(None, "F")


def test_remove_condition() -> None:
    conds = [cond("A", "True"), cond("B", "False"), cond("C", "True")]
    result = c.remove_condition(conds, "B")
    assert [x.type for x in result] == ["A", "C"]
    assert [x.type for x in conds] == ["A", "B", "C"]
    assert [x.type for x in c.remove_condition(result, "Missing")] == ["A", "C"]
    assert c.remove_condition(None, "A") == []


def test_condition_type_names_are_kubestashs() -> None:
    # These strings are read by users, dashboards and other controllers; they must not drift.
    assert c.BACKEND_INITIALIZED == "BackendInitialized"
    assert c.BACKEND_SECRET_FOUND == "BackendSecretFound"
    assert c.REPOSITORY_INITIALIZED == "RepositoryInitialized"
    assert c.VALIDATION_PASSED == "ValidationPassed"
    assert c.SCHEDULER_ENSURED == "SchedulerEnsured"
    assert c.METRICS_PUSHED == "MetricsPushed"
    assert c.BACKUP_SKIPPED == "BackupSkipped"
    assert c.PRE_BACKUP_HOOKS_SUCCEEDED == "PreBackupHooksExecutionSucceeded"
    assert c.POST_BACKUP_HOOKS_SUCCEEDED == "PostBackupHooksExecutionSucceeded"
    assert c.SNAPSHOT_METADATA_UPLOADED == "SnapshotMetadataUploaded"
    assert c.RECENT_SNAPSHOT_LIST_UPDATED == "RecentSnapshotListUpdated"
    assert c.BACKUP_INCOMPLETE == "BackupIncomplete"
    assert c.RESTORE_INCOMPLETE == "RestoreIncomplete"
    assert c.VERIFICATION_SESSION_HISTORY_CLEANED == "VerificationSessionHistoryCleaned"
    assert c.POD_PENDING_TOO_LONG == "PodHasBeenInPendingStateForLongerThanExpected"
