"""PATCH semantics: RFC 7386 / RFC 6902, strategic merge directives, server-side apply and field ownership."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kubestash.apiserver.managed_fields import decode_fields, encode_fields, path_string
from kubestash.apiserver.patch import (
    ApplyConflict,
    PatchError,
    json_patch,
    merge_patch,
    record_update,
    server_side_apply,
    strategic_merge_patch,
)

T0 = "2025-01-01T00:00:00Z"
T1 = "2025-01-01T00:01:00Z"
T2 = "2025-01-01T00:02:00Z"


def entries(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """managedFields by (manager, operation)."""
    return {(e["manager"], e["operation"]): e for e in obj["metadata"].get("managedFields", [])}


def owned(obj: dict[str, Any], manager: str, operation: str = "Apply") -> set[str]:
    """Paths ``manager`` owns, printed the way kube prints them."""
    entry = entries(obj).get((manager, operation))
    return set() if entry is None else {path_string(p) for p in decode_fields(entry["fieldsV1"])}


def strip_managed(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"].pop("managedFields", None)
    return out


# --------------------------------------------------------------------------- RFC 7386 merge patch

RFC7386_APPENDIX_A = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC7386_APPENDIX_A)
def test_merge_patch_rfc7386_appendix_a(target: Any, patch: Any, expected: Any) -> None:
    before = copy.deepcopy((target, patch))
    assert merge_patch(target, patch) == expected
    assert (target, patch) == before  # inputs untouched


def test_merge_patch_result_shares_nothing_with_inputs() -> None:
    target = {"spec": {"list": [1]}}
    patch = {"spec": {"other": {"x": [2]}}}
    out = merge_patch(target, patch)
    out["spec"]["list"].append(9)
    out["spec"]["other"]["x"].append(9)
    assert target == {"spec": {"list": [1]}}
    assert patch == {"spec": {"other": {"x": [2]}}}


# --------------------------------------------------------------------------- RFC 6902 JSON patch

DOC: dict[str, Any] = {"metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"replicas": 1, "args": ["a", "b"]}}


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ([{"op": "add", "path": "/metadata/labels/b", "value": "2"}], {"a": "1", "b": "2"}),
        ([{"op": "remove", "path": "/metadata/labels/a"}], {}),
        ([{"op": "replace", "path": "/metadata/labels/a", "value": "9"}], {"a": "9"}),
        ([{"op": "move", "from": "/metadata/labels/a", "path": "/metadata/labels/z"}], {"z": "1"}),
        ([{"op": "copy", "from": "/metadata/labels/a", "path": "/metadata/labels/c"}], {"a": "1", "c": "1"}),
        (
            [
                {"op": "test", "path": "/spec/replicas", "value": 1},
                {"op": "add", "path": "/metadata/labels/t", "value": ""},
            ],
            {"a": "1", "t": ""},
        ),
    ],
)
def test_json_patch_operations(ops: list[dict[str, Any]], expected: dict[str, str]) -> None:
    before = copy.deepcopy(DOC)
    out = json_patch(DOC, ops)
    assert out["metadata"]["labels"] == expected
    assert before == DOC


def test_json_patch_list_operations() -> None:
    out = json_patch(
        DOC,
        [
            {"op": "add", "path": "/spec/args/-", "value": "c"},
            {"op": "add", "path": "/spec/args/0", "value": "first"},
            {"op": "remove", "path": "/spec/args/1"},
        ],
    )
    assert out["spec"]["args"] == ["first", "b", "c"]


@pytest.mark.parametrize(
    ("ops", "code", "message"),
    [
        ([{"op": "test", "path": "/spec/replicas", "value": 2}], 422, "testing value /spec/replicas failed"),
        ([{"op": "test", "path": "/spec/missing", "value": 2}], 422, "testing value /spec/missing failed"),
        ([{"op": "remove", "path": "/spec/missing"}], 422, "operation 0 (remove /spec/missing) failed: path not found"),
        ([{"op": "replace", "path": "/nope/deeper", "value": 1}], 422, "path not found"),
        ([{"op": "move", "from": "/nope", "path": "/x"}], 422, "(move /nope -> /x) failed"),
        ([{"op": "copy", "from": "/nope", "path": "/x"}], 422, "path not found"),
        ([{"op": "add", "path": "/spec/args/7", "value": "x"}], 422, "operation 0 (add /spec/args/7) failed"),
        ([{"op": "frobnicate", "path": "/spec"}], 422, "Unknown operation"),
        ([{"path": "/spec"}], 422, "'op'"),
        ([{"op": "add", "path": "", "value": 1}], 422, "must be a JSON object"),
        ({"op": "add"}, 400, "must be a list"),
        (["add"], 400, "operation 0 must be an object"),
    ],
)
def test_json_patch_failures(ops: Any, code: int, message: str) -> None:
    with pytest.raises(PatchError) as info:
        json_patch(DOC, ops)
    assert info.value.code == code
    assert message in str(info.value)


def test_json_patch_failure_is_atomic_and_leaves_target_alone() -> None:
    before = copy.deepcopy(DOC)
    with pytest.raises(PatchError):
        json_patch(
            DOC, [{"op": "remove", "path": "/spec/replicas"}, {"op": "test", "path": "/spec/replicas", "value": 1}]
        )
    assert before == DOC


# --------------------------------------------------------------------------- strategic merge patch

POD: dict[str, Any] = {
    "metadata": {"name": "p", "finalizers": ["a", "b"], "labels": {"app": "web"}},
    "spec": {
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
        "containers": [
            {
                "name": "app",
                "image": "app:1",
                "args": ["--x"],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "volumeMounts": [{"name": "data", "mountPath": "/a"}, {"name": "data", "mountPath": "/b"}],
            },
            {"name": "old", "image": "old:1"},
            {"name": "injected", "image": "sidecar:1"},
        ],
        "tolerations": [{"key": "k", "operator": "Exists"}],
    },
}


def no_directives(value: Any) -> bool:
    if isinstance(value, dict):
        return all(not k.startswith("$") and no_directives(v) for k, v in value.items())
    if isinstance(value, list):
        return all(no_directives(v) for v in value)
    return True


def test_strategic_merge_containers_merge_by_name() -> None:
    out = strategic_merge_patch(POD, {"spec": {"containers": [{"name": "app", "image": "app:2"}]}})
    names = [c["name"] for c in out["spec"]["containers"]]
    assert names == ["app", "old", "injected"]  # a merge patch would have dropped the other two
    app = out["spec"]["containers"][0]
    assert app["image"] == "app:2"
    assert app["env"] == POD["spec"]["containers"][0]["env"]  # untouched fields of the item survive
    assert POD["spec"]["containers"][0]["image"] == "app:1"  # input untouched


def test_strategic_merge_adds_new_named_items_and_merges_env_by_name() -> None:
    out = strategic_merge_patch(
        POD,
        {
            "spec": {
                "containers": [
                    {"name": "app", "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}]},
                    {"name": "new", "image": "new:1"},
                ]
            }
        },
    )
    app = out["spec"]["containers"][0]
    assert app["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "two"}, {"name": "C", "value": "3"}]
    assert out["spec"]["containers"][-1] == {"name": "new", "image": "new:1"}


def test_strategic_merge_patch_delete_in_list() -> None:
    out = strategic_merge_patch(POD, {"spec": {"containers": [{"name": "old", "$patch": "delete"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["app", "injected"]
    assert no_directives(out)


def test_strategic_merge_set_element_order() -> None:
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "new"}, {"name": "injected"}, {"name": "app"}],
            "containers": [{"name": "new", "image": "new:1"}],
        }
    }
    out = strategic_merge_patch(POD, patch)
    assert [c["name"] for c in out["spec"]["containers"]] == ["new", "injected", "app", "old"]
    assert no_directives(out)


def test_strategic_merge_kubectl_client_side_apply_patch() -> None:
    """The shape ``kubectl apply`` sends after a user edits their manifest."""
    patch = {
        "metadata": {
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "$setElementOrder/finalizers": ["b", "c"],
            "$deleteFromPrimitiveList/finalizers": ["a"],
            "finalizers": ["c"],
        },
        "spec": {
            "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None},
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [
                {
                    "name": "app",
                    "$setElementOrder/env": [{"name": "B"}, {"name": "D"}],
                    "env": [{"name": "A", "$patch": "delete"}, {"name": "D", "value": "4"}],
                    "$setElementOrder/volumeMounts": [{"mountPath": "/b"}, {"mountPath": "/a"}],
                    "volumeMounts": [{"mountPath": "/b", "readOnly": True}],
                },
                {"name": "old", "$patch": "delete"},
            ],
        },
    }
    out = strategic_merge_patch(POD, patch)
    assert no_directives(out)
    assert out["metadata"]["finalizers"] == ["b", "c"]
    assert out["metadata"]["annotations"] == {"kubectl.kubernetes.io/last-applied-configuration": "{}"}
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    assert [c["name"] for c in out["spec"]["containers"]] == ["app", "injected"]
    app = out["spec"]["containers"][0]
    assert app["env"] == [{"name": "B", "value": "2"}, {"name": "D", "value": "4"}]
    # volumeMounts merge on mountPath, not name: both mounts of volume "data" survive.
    assert app["volumeMounts"] == [
        {"name": "data", "mountPath": "/b", "readOnly": True},
        {"name": "data", "mountPath": "/a"},
    ]


def test_strategic_merge_patch_replace_directives() -> None:
    out = strategic_merge_patch(
        POD,
        {
            "metadata": {"labels": {"$patch": "replace", "only": "this"}},
            "spec": {"containers": [{"$patch": "replace"}, {"name": "solo", "image": "s:1"}]},
        },
    )
    assert out["metadata"]["labels"] == {"only": "this"}
    assert out["spec"]["containers"] == [{"name": "solo", "image": "s:1"}]


def test_strategic_merge_patch_delete_map_and_null() -> None:
    out = strategic_merge_patch(POD, {"spec": {"strategy": {"$patch": "delete"}}, "metadata": {"labels": None}})
    assert "strategy" not in out["spec"]
    assert "labels" not in out["metadata"]


def test_strategic_merge_scalar_and_unkeyed_lists_replace() -> None:
    out = strategic_merge_patch(
        POD,
        {
            "spec": {
                "containers": [{"name": "app", "args": ["--y"]}],
                "tolerations": [{"key": "other", "operator": "Exists"}],
            }
        },
    )
    assert out["spec"]["containers"][0]["args"] == ["--y"]
    assert out["spec"]["tolerations"] == [{"key": "other", "operator": "Exists"}]


def test_strategic_merge_finalizers_merge_as_a_set() -> None:
    out = strategic_merge_patch(POD, {"metadata": {"finalizers": ["b", "z"]}})
    assert out["metadata"]["finalizers"] == ["a", "b", "z"]


def test_strategic_merge_directives_on_new_items_are_not_stored() -> None:
    out = strategic_merge_patch(
        {"spec": {}},
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "a"}],
                "containers": [
                    {"name": "a", "$setElementOrder/env": [{"name": "X"}], "env": [{"name": "X", "value": None}]}
                ],
            }
        },
    )
    assert out == {"spec": {"containers": [{"name": "a", "env": [{"name": "X"}]}]}}


@pytest.mark.parametrize(
    "patch",
    [
        {"spec": {"$patch": "frobnicate"}},
        {"$patch": "delete"},
        {"spec": {"$retainKeys": "type"}},
        {"spec": {"$setElementOrder/containers": {"name": "a"}}},
    ],
)
def test_strategic_merge_malformed_directives_are_400(patch: dict[str, Any]) -> None:
    with pytest.raises(PatchError) as info:
        strategic_merge_patch(POD, patch)
    assert info.value.code == 400


def test_strategic_merge_patch_must_be_an_object() -> None:
    with pytest.raises(PatchError) as info:
        strategic_merge_patch(POD, ["x"])  # type: ignore[arg-type]
    assert info.value.code == 400


# --------------------------------------------------------------------------- server-side apply

DEPLOY: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "demo", "labels": {"app": "web"}},
    "spec": {
        "replicas": 2,
        "template": {
            "spec": {
                "containers": [
                    {"name": "app", "image": "app:1", "args": ["--a"]},
                    {"name": "side", "image": "side:1"},
                ]
            }
        },
    },
}


def applied(**spec: Any) -> dict[str, Any]:
    """A minimal apply configuration for DEPLOY with ``spec`` fields."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": spec,
    }


def created() -> dict[str, Any]:
    return server_side_apply(None, DEPLOY, "kubectl", now=T0)


def test_apply_create_records_fieldsv1() -> None:
    obj = created()
    assert strip_managed(obj) == DEPLOY
    (entry,) = obj["metadata"]["managedFields"]
    assert entry == {
        "manager": "kubectl",
        "operation": "Apply",
        "apiVersion": "apps/v1",
        "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {
                    "f:spec": {
                        "f:containers": {
                            'k:{"name":"app"}': {".": {}, "f:args": {}, "f:image": {}, "f:name": {}},
                            'k:{"name":"side"}': {".": {}, "f:image": {}, "f:name": {}},
                        }
                    }
                },
            },
        },
    }


def test_apply_ignores_server_fields_and_status() -> None:
    config = copy.deepcopy(DEPLOY)
    config["metadata"].update(
        resourceVersion="7", managedFields=[{"manager": "evil", "operation": "Apply"}], creationTimestamp=None
    )
    config["status"] = {"replicas": 99}
    obj = server_side_apply(None, config, "kubectl", now=T0)
    assert "status" not in obj
    assert "resourceVersion" not in obj["metadata"]
    assert "creationTimestamp" not in obj["metadata"]
    assert set(entries(obj)) == {("kubectl", "Apply")}
    assert not any(p.startswith(".status") for p in owned(obj, "kubectl"))


def test_apply_keeps_live_status_when_status_is_ignored() -> None:
    live = created()
    live["status"] = {"replicas": 2}
    config = copy.deepcopy(DEPLOY)
    config["status"] = {"replicas": 99}
    assert server_side_apply(live, config, "kubectl", now=T1)["status"] == {"replicas": 2}
    with_status = server_side_apply(live, config, "kubectl", now=T1, ignore_status=False)
    assert with_status["status"] == {"replicas": 99}
    assert ".status.replicas" in owned(with_status, "kubectl")


def test_reapply_by_same_manager_removes_dropped_fields() -> None:
    live = created()
    config = copy.deepcopy(DEPLOY)
    del config["spec"]["replicas"]
    del config["metadata"]["labels"]
    config["spec"]["template"]["spec"]["containers"].pop()  # drop "side"
    obj = server_side_apply(live, config, "kubectl", now=T1)
    assert "replicas" not in obj["spec"]
    assert "labels" not in obj["metadata"]  # emptied and owned by nobody
    assert [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]] == ["app"]
    assert ".spec.replicas" not in owned(obj, "kubectl")
    assert entries(obj)[("kubectl", "Apply")]["time"] == T1


def test_apply_conflict_names_field_and_manager() -> None:
    live = created()
    with pytest.raises(ApplyConflict) as info:
        server_side_apply(live, applied(replicas=5), "ci", now=T1)
    err = info.value
    assert err.code == 409
    assert str(err) == 'Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas'
    assert err.causes() == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "kubectl"', "field": ".spec.replicas"}
    ]
    assert [(c.manager, c.field) for c in err.conflicts] == [("kubectl", ".spec.replicas")]


def test_apply_conflict_in_keyed_list_item() -> None:
    live = created()
    config = applied(template={"spec": {"containers": [{"name": "app", "image": "app:2"}]}})
    with pytest.raises(ApplyConflict) as info:
        server_side_apply(live, config, "ci", now=T1)
    assert [c.field for c in info.value.conflicts] == ['.spec.template.spec.containers[name="app"].image']


def test_apply_conflicts_with_several_managers_are_all_listed() -> None:
    live = created()
    live = record_update(live, merge_patch(live, {"metadata": {"labels": {"team": "a"}}}), "editor", now=T1)
    with pytest.raises(ApplyConflict) as info:
        server_side_apply(
            live,
            {**applied(replicas=9, template={"spec": {"containers": [{"name": "app", "args": ["--b"]}]}})}
            | {"metadata": {"name": "web", "labels": {"team": "b"}}},
            "ci",
            now=T2,
        )
    message = str(info.value)
    assert message.startswith("Apply failed with 3 conflicts: ")
    assert 'conflicts with "editor" using apps/v1:\n- .metadata.labels.team' in message
    assert 'conflicts with "kubectl":\n- .spec.replicas\n- .spec.template.spec.containers[name="app"].args' in message


def test_force_apply_takes_ownership() -> None:
    live = created()
    obj = server_side_apply(live, applied(replicas=5), "ci", force=True, now=T1)
    assert obj["spec"]["replicas"] == 5
    assert owned(obj, "ci") == {".spec.replicas"}
    assert ".spec.replicas" not in owned(obj, "kubectl")
    # kubectl no longer owns it, so its next apply (still saying 2) conflicts with ci.
    with pytest.raises(ApplyConflict, match=r'conflict with "ci": \.spec\.replicas'):
        server_side_apply(obj, DEPLOY, "kubectl", now=T2)


def test_dropping_a_field_someone_else_also_owns_keeps_it() -> None:
    live = created()
    shared = server_side_apply(live, applied(replicas=2), "ci", now=T1)
    config = copy.deepcopy(DEPLOY)
    del config["spec"]["replicas"]
    obj = server_side_apply(shared, config, "kubectl", now=T2)
    assert obj["spec"]["replicas"] == 2
    assert owned(obj, "ci") == {".spec.replicas"}


def test_shared_ownership_same_value_no_conflict() -> None:
    live = created()
    obj = server_side_apply(live, applied(replicas=2), "ci", now=T1)
    assert strip_managed(obj) == strip_managed(live)
    assert ".spec.replicas" in owned(obj, "kubectl")
    assert ".spec.replicas" in owned(obj, "ci")
    # Now neither can change it alone.
    for manager in ("kubectl", "ci"):
        with pytest.raises(ApplyConflict):
            server_side_apply(obj, applied(replicas=3), manager, now=T2)


def test_update_manager_owns_changed_fields_and_conflicts_with_apply() -> None:
    live = created()
    edited = merge_patch(live, {"spec": {"replicas": 7}})
    obj = record_update(live, edited, "kubectl-client-side-apply", now=T1)
    entry = entries(obj)[("kubectl-client-side-apply", "Update")]
    assert entry["apiVersion"] == "apps/v1"
    assert entry["time"] == T1
    assert entry["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    assert ".spec.replicas" not in owned(obj, "kubectl")
    with pytest.raises(ApplyConflict) as info:
        server_side_apply(obj, DEPLOY, "kubectl", now=T2)
    assert str(info.value) == (
        'Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas'
    )
    assert info.value.causes()[0]["message"] == 'conflict with "kubectl-client-side-apply" using apps/v1'


def test_apply_adds_new_keyed_items_and_keeps_others() -> None:
    live = created()
    config = applied(template={"spec": {"containers": [{"name": "extra", "image": "extra:1"}]}})
    obj = server_side_apply(live, config, "ci", now=T1)
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "side", "extra"]
    assert owned(obj, "ci") == {
        '.spec.template.spec.containers[name="extra"]',
        '.spec.template.spec.containers[name="extra"].name',
        '.spec.template.spec.containers[name="extra"].image',
    }
    # Removing its item later takes only ci's container away.
    no_spec = {k: v for k, v in applied().items() if k != "spec"}
    obj2 = server_side_apply(obj, no_spec, "ci", now=T2)
    assert [c["name"] for c in obj2["spec"]["template"]["spec"]["containers"]] == ["app", "side"]
    assert ("ci", "Apply") not in entries(obj2)


def test_atomic_list_owned_as_a_whole() -> None:
    obj = created()
    fields = decode_fields(entries(obj)[("kubectl", "Apply")]["fieldsV1"])
    assert ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"app"}', "f:args") in fields
    assert not any(len(p) > 6 and p[5] == "f:args" for p in fields)


def test_dropped_item_keeps_fields_other_managers_own() -> None:
    live = created()
    live = record_update(live, json_patch(live, [_set_image("app", "app:9")]), "kubectl-set", now=T1)
    config = copy.deepcopy(DEPLOY)
    config["spec"]["template"]["spec"]["containers"] = [{"name": "side", "image": "side:1"}]
    obj = server_side_apply(live, config, "kubectl", now=T2)
    # "app" stays because kubectl-set owns its image; what only kubectl owned (args) is gone.
    assert obj["spec"]["template"]["spec"]["containers"][0] == {"name": "app", "image": "app:9"}


def _set_image(container: str, image: str) -> dict[str, Any]:
    index = [c["name"] for c in DEPLOY["spec"]["template"]["spec"]["containers"]].index(container)
    return {"op": "replace", "path": f"/spec/template/spec/containers/{index}/image", "value": image}


def test_noop_apply_keeps_object_and_time() -> None:
    live = created()
    again = server_side_apply(live, DEPLOY, "kubectl", now=T1)
    assert again == live


def test_first_apply_to_untracked_object_conflicts_with_before_first_apply() -> None:
    untracked = strip_managed(created())
    with pytest.raises(ApplyConflict, match=r'conflict with "before-first-apply" using apps/v1: \.spec\.replicas'):
        server_side_apply(untracked, applied(replicas=3), "kubectl", now=T1)
    obj = server_side_apply(untracked, applied(replicas=2), "kubectl", now=T1)
    assert ".spec.replicas" in owned(obj, "before-first-apply", "Update")
    assert owned(obj, "kubectl") == {".spec.replicas"}


def test_apply_null_removes_field() -> None:
    live = created()
    config = copy.deepcopy(DEPLOY)
    config["spec"]["replicas"] = None
    obj = server_side_apply(live, config, "kubectl", now=T1)
    assert "replicas" not in obj["spec"]


def test_apply_requires_manager_and_object() -> None:
    with pytest.raises(PatchError) as info:
        server_side_apply(None, DEPLOY, "", now=T0)
    assert info.value.code == 400
    with pytest.raises(PatchError) as info:
        server_side_apply(None, ["x"], "m", now=T0)  # type: ignore[arg-type]
    assert info.value.code == 400


def test_apply_does_not_mutate_inputs() -> None:
    live = created()
    before_live, before_config = copy.deepcopy(live), copy.deepcopy(DEPLOY)
    server_side_apply(live, applied(replicas=4), "ci", force=True, now=T1)
    assert live == before_live
    assert before_config == DEPLOY


def test_status_subresource_apply_only_touches_status() -> None:
    live = created()
    config = copy.deepcopy(DEPLOY)
    config["spec"]["replicas"] = 50
    config["status"] = {"readyReplicas": 2}
    obj = server_side_apply(live, config, "controller", now=T1, subresource="status")
    assert obj["spec"]["replicas"] == 2
    assert obj["status"] == {"readyReplicas": 2}
    entry = next(e for e in obj["metadata"]["managedFields"] if e["manager"] == "controller")
    assert entry["subresource"] == "status"
    assert entry["fieldsV1"] == {"f:status": {"f:readyReplicas": {}}}


# --------------------------------------------------------------------------- record_update


def test_record_update_on_create_owns_everything_but_identity() -> None:
    obj = record_update(None, copy.deepcopy(DEPLOY), "kubectl-create", now=T0)
    fields = entries(obj)[("kubectl-create", "Update")]["fieldsV1"]
    assert "f:apiVersion" not in fields and "f:kind" not in fields
    assert fields["f:metadata"] == {"f:labels": {".": {}, "f:app": {}}}  # no name/namespace
    assert fields["f:spec"]["f:replicas"] == {}


def test_record_update_without_changes_adds_no_entry() -> None:
    live = created()
    assert record_update(live, copy.deepcopy(live), "someone", now=T1) == live


def test_record_update_removed_fields_leave_every_set() -> None:
    live = created()
    edited = merge_patch(live, {"spec": {"replicas": None}})
    obj = record_update(live, edited, "editor", now=T1)
    assert ".spec.replicas" not in owned(obj, "kubectl")
    assert ("editor", "Update") not in entries(obj)  # removing gives no ownership


def test_record_update_same_manager_accumulates() -> None:
    live = created()
    one = record_update(live, merge_patch(live, {"metadata": {"annotations": {"a": "1"}}}), "ed", now=T1)
    two = record_update(one, merge_patch(one, {"spec": {"paused": True}}), "ed", now=T2)
    assert owned(two, "ed", "Update") == {".metadata.annotations", ".metadata.annotations.a", ".spec.paused"}
    assert entries(two)[("ed", "Update")]["time"] == T2


def test_record_update_untracked_object_stays_untracked() -> None:
    untracked = strip_managed(created())
    obj = record_update(untracked, merge_patch(untracked, {"spec": {"replicas": 4}}), "ed", now=T1)
    assert "managedFields" not in obj["metadata"]


def test_record_update_reset_and_omitted_managed_fields() -> None:
    live = created()
    edited = merge_patch(live, {"spec": {"replicas": 4}})
    omitted = strip_managed(edited)  # clients unaware of managedFields do not wipe them
    assert set(entries(record_update(live, omitted, "ed", now=T1))) == {("kubectl", "Apply"), ("ed", "Update")}
    empty = copy.deepcopy(omitted)
    empty["metadata"]["managedFields"] = []  # [] is not a reset either
    assert set(entries(record_update(live, empty, "ed", now=T1))) == {("kubectl", "Apply"), ("ed", "Update")}
    reset = copy.deepcopy(omitted)
    reset["metadata"]["managedFields"] = [{}]
    assert "managedFields" not in record_update(live, reset, "ed", now=T1)["metadata"]


def test_update_managers_are_capped() -> None:
    obj = created()
    for i in range(12):
        obj = record_update(obj, merge_patch(obj, {"metadata": {"annotations": {f"k{i}": "v"}}}), f"m{i:02d}", now=T1)
    updates = [e for e in obj["metadata"]["managedFields"] if e["operation"] == "Update"]
    assert len(updates) == 10
    assert "ancient-changes" in {e["manager"] for e in updates}
    ancient = owned(obj, "ancient-changes", "Update")
    assert {".metadata.annotations.k0", ".metadata.annotations.k1", ".metadata.annotations.k2"} <= ancient


# --------------------------------------------------------------------------- FieldsV1 encoding


def test_fieldsv1_round_trip_and_paths() -> None:
    fields = {
        ("f:metadata", "f:labels"),
        ("f:metadata", "f:labels", "f:app"),
        ("f:spec", "f:ports", 'k:{"port":80,"protocol":"TCP"}'),
        ("f:metadata", "f:finalizers", 'v:"kubestash.com"'),
        ("f:spec", "f:items", "i:0"),
    }
    encoded = encode_fields(fields)
    assert encoded["f:metadata"]["f:labels"] == {".": {}, "f:app": {}}
    assert decode_fields(json.loads(json.dumps(encoded))) == fields
    assert path_string(("f:spec", "f:ports", 'k:{"port":80,"protocol":"TCP"}', "f:name")) == (
        '.spec.ports[port=80,protocol="TCP"].name'
    )
    assert path_string(("f:metadata", "f:finalizers", 'v:"x"')) == '.metadata.finalizers[="x"]'
    assert path_string(("f:spec", "f:items", "i:0")) == ".spec.items[0]"


@pytest.mark.parametrize("bad", [[], {"f:a": 1}, {"x:a": {}}, {".": {}}, {"k:notjson": {}}])
def test_fieldsv1_decode_rejects_garbage(bad: Any) -> None:
    with pytest.raises(ValueError):
        decode_fields(bad)
