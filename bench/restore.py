"""Benchmark a restore end to end: a ``RestoreSession`` under ``kubestash up`` against plain ``restic restore``.

Run with the project's virtualenv::

    .venv/bin/python bench/restore.py [--size-mib 1024] [--seed 1] [--repeats 1] [--keep] [--out FILE]

The seeded dataset of bench/backup.py is generated first and backed up once by ``kubestash up`` (the
BackupConfiguration's initial backup, not measured). Then, ``--repeats`` times, in alternating order:

*Ours*: a new PersistentVolume + PersistentVolumeClaim on an empty directory, and a RestoreSession of the
``latest`` Snapshot into it (``pvc-addon``, task ``logical-backup-restore``); timed from the create call to
the first poll (every 100 ms) that reads ``status.phase: Succeeded``.

*Reference*: ``restic restore <id> --target <empty dir> --no-cache`` of the same restic snapshot in the same
repository, with the same password (our restore task runs restic with ``--no-cache`` too), timed as a process.

Both restored trees are checked against the dataset (file count, bytes, sha256 of a sample of files).
One JSON document goes to stdout (and to ``--out``); progress goes to stderr. See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from backup import (
    BIG_BC,
    MIB,
    NAMESPACE,
    Dataset,
    TreeSampler,
    as_dict,
    cpu_delta,
    cpu_times,
    create,
    descendants,
    first_backup,
    generate_dataset,
    get_dict,
    pv_pvc,
    restic_env,
    restic_version,
    run_timed,
    wait_tasks_quiet,
    world_objects,
)
from common import Process, kubestash_argv, log, proc_status_mb, run_and_print
from lightkube import Client, KubeConfig

from kubestash.api.durations import parse_go_duration
from kubestash.controllers.kinds import by_kind

TARGET_RATIO = 1.10
POLL_S = 0.1
RESTORE_TIMEOUT_S = 3600.0
REPO_DIRECTORY = "/dataset"
COMPONENT = "dump"
SECRET = "encrypt-secret"
FINAL = ("Succeeded", "Failed", "Invalid", "Unknown")
SAMPLE_FILES = 32


# -------------------------------------------------------------- verification
def tree_files(root: Path) -> dict[str, int]:
    """Every regular file under ``root``: relative path -> size."""
    out: dict[str, int] = {}
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            out[str(path.relative_to(root))] = path.lstat().st_size
    return out


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def sample_of(files: dict[str, int]) -> list[str]:
    """Evenly spaced over the sorted paths, plus the first file of each top-level part."""
    names = sorted(files)
    step = max(1, len(names) // SAMPLE_FILES)
    picked = set(names[::step])
    picked.update(next(n for n in names if n.startswith(part + "/")) for part in {n.split("/")[0] for n in names})
    return sorted(picked)


def verify(restored: Path, dataset: Dataset, expected: dict[str, int], sample: list[str]) -> dict[str, Any]:
    """Same file set and sizes as the dataset, and the same sha256 for the sample; raises when not."""
    got = tree_files(restored)
    problems = []
    if set(got) != set(expected):
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        problems.append(f"{len(missing)} files missing (e.g. {missing[:3]}), {len(extra)} extra (e.g. {extra[:3]})")
    if sum(got.values()) != dataset.bytes:
        problems.append(f"{sum(got.values())} bytes restored, {dataset.bytes} in the dataset")
    bad = [n for n in sample if n in got and sha256(restored / n) != sha256(dataset.root / n)]
    if bad:
        problems.append(f"sha256 differs for {bad[:5]}")
    if problems:
        raise RuntimeError(f"restored tree {restored} differs from the dataset: {'; '.join(problems)}")
    return {"files": len(got), "bytes": sum(got.values()), "sha256_sampled_files": len(sample), "ok": True}


def clear(path: Path) -> None:
    """Remove a restored tree (to free the space), then flush, so the next run pays no one else's writeback."""
    shutil.rmtree(path, ignore_errors=True)
    os.sync()


# ----------------------------------------------------------------- reference
def reference_once(repo: Path, snapshot_id: str, snapshot_path: str, target: Path, check: Any) -> dict[str, Any]:
    os.sync()
    timed = run_timed(
        ["restic", "-r", str(repo), "--no-cache", "restore", snapshot_id, "--target", str(target)], restic_env()
    )
    if timed.returncode != 0:
        raise RuntimeError(f"restic restore failed ({timed.returncode}): {timed.stderr[-2000:]}")
    log(f"  reference restic restore: {timed.wall_s:.2f}s, peak RSS {timed.maxrss_mb:.0f} MiB")
    out: dict[str, Any] = {
        "restore_s": round(timed.wall_s, 3),
        "cpu_s": round(timed.cpu_s, 2),
        "maxrss_mb": round(timed.maxrss_mb, 1),
        "verified": check(target / snapshot_path.lstrip("/")),
    }
    clear(target)
    # For the breakdown, not part of restic_s: the `restic ls --json` our task runs before its restore.
    listed = run_timed(["restic", "-r", str(repo), "--no-cache", "ls", "--json", snapshot_id], restic_env())
    if listed.returncode == 0:
        out["ls_json_alone_s"] = round(listed.wall_s, 3)
        out["ls_json_stdout_bytes"] = len(listed.stdout)
    return out


# ---------------------------------------------------------------------- ours
def restore_session(name: str, pvc: str, repository: str) -> dict[str, Any]:
    return {
        "apiVersion": "core.kubestash.com/v1alpha1",
        "kind": "RestoreSession",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "target": {"apiGroup": "", "kind": "PersistentVolumeClaim", "name": pvc, "namespace": NAMESPACE},
            "dataSource": {
                "repository": repository,
                "snapshot": "latest",
                "encryptionSecret": {"name": SECRET, "namespace": NAMESPACE},
            },
            "addon": {"name": "pvc-addon", "tasks": [{"name": "logical-backup-restore"}]},
        },
    }


RESTORE_MARKS = ("session_running", "component_running", "component_final", "session_final")


def follow_restore(kube: Client, name: str, started: float) -> tuple[dict[str, float], dict[str, Any]]:
    """Poll the RestoreSession every 100 ms until final; when each step was first seen (s after ``started``)."""
    marks: dict[str, float] = {}
    deadline = time.monotonic() + RESTORE_TIMEOUT_S
    while True:
        session = get_dict(kube, "RestoreSession", name) or {}
        now = time.perf_counter() - started
        status = session.get("status") or {}
        component = (status.get("components") or {}).get(COMPONENT) or {}
        if status.get("phase") == "Running":
            marks.setdefault("session_running", now)
        if component.get("phase") in ("Running", "Succeeded", "Failed"):
            marks.setdefault("component_running", now)
        if component.get("phase") in ("Succeeded", "Failed"):
            marks.setdefault("component_final", now)
        if status.get("phase") in FINAL:
            marks.setdefault("session_final", now)
            if status["phase"] != "Succeeded":
                raise RuntimeError(f"RestoreSession {name} is {status['phase']}: {json.dumps(status, indent=2)}")
            return {k: round(marks[k], 3) for k in RESTORE_MARKS if k in marks}, session
        if time.monotonic() > deadline:
            raise RuntimeError(f"RestoreSession {name}: not final within {RESTORE_TIMEOUT_S:.0f}s ({status})")
        time.sleep(POLL_S)


def _seconds(duration: str | None) -> float | None:
    if not duration:
        return None
    try:
        return round(parse_go_duration(duration).total_seconds(), 3)
    except ValueError:
        return None


def _rss(pid: int) -> float | None:
    try:
        return round(proc_status_mb(pid, "VmRSS"), 1)
    except (OSError, RuntimeError):
        return None


def ours_once(kube: Client, server_pid: int, index: int, root: Path, repository: str, check: Any) -> dict[str, Any]:
    pvc = "restored" if index == 0 else f"restored-{index}"
    target = root / f"ours-restore-{index}"
    target.mkdir()
    for obj in pv_pvc(pvc, target):
        create(kube, obj)
    time.sleep(0.5)  # the new PV/PVC reach the controllers' caches before the clock starts
    os.sync()
    name = "bench-restore" if index == 0 else f"bench-restore-{index}"
    sampler = TreeSampler(server_pid)
    sampler.start()
    cpu0 = cpu_times(server_pid)
    started = time.perf_counter()
    try:
        create(kube, restore_session(name, pvc, repository))
        created = time.perf_counter() - started
        marks, session = follow_restore(kube, name, started)
        restic_runs = sampler.restic_between(started, time.perf_counter())
    finally:
        sampler.stop()
    total = marks["session_final"]
    status = session.get("status") or {}
    component_duration = ((status.get("components") or {}).get(COMPONENT) or {}).get("duration")
    tree = [(pid, comm) for pid, comm, _ in descendants(server_pid)]
    lingered = wait_tasks_quiet(server_pid)
    log(f"  ours RestoreSession Succeeded after {total:.2f}s (component {component_duration})")
    restore_run = next((r for r in restic_runs if r["command"] == "restic restore"), None)
    ls_run = next((r for r in restic_runs if r["command"] == "restic ls"), None)
    breakdown: dict[str, Any] = {
        "create_call_s": round(created, 3),
        "component_duration_s": _seconds(component_duration),
        "session_duration_s": _seconds(status.get("duration")),
    }
    if restore_run is not None:
        first_restic = restic_runs[0]["seen_from_s"]
        restore_end = restore_run["seen_from_s"] + restore_run["seen_for_s"]
        breakdown.update(
            {
                "before_first_restic_s": first_restic,
                "restic_ls_s": ls_run["seen_for_s"] if ls_run else None,
                "restic_restore_s": restore_run["seen_for_s"],
                "after_restic_restore_s": round(total - restore_end, 3),
            }
        )
    out = {
        "restore_s": total,
        "steps_s": marks,
        "breakdown": breakdown,
        "restic_runs": restic_runs,
        "tasks_quiet_after_final_s": lingered,
        "cpu_s": cpu_delta(cpu0, cpu_times(server_pid)),
        "rss": {
            "tree_peak_sampled_mb": round(sampler.peak_total_mb, 1),
            "peak_by_process_sampled_mb": {k: round(v, 1) for k, v in sorted(sampler.peak_by_comm.items())},
            "samples": sampler.samples,
            "descendants_at_final": [{"comm": comm, "rss_mb": _rss(pid)} for pid, comm in tree],
        },
        "verified": check(target),
    }
    leftovers = [p.name for p in target.iterdir() if p.name.startswith(".kubestash-restore-")]
    if leftovers:
        raise RuntimeError(f"staging directories left in {target}: {leftovers}")
    clear(target)
    return out


def restic_snapshot(kube: Client, backend: Path) -> tuple[Path, str, str, dict[str, Any]]:
    """The restic repository, snapshot id and backed-up path of the one Snapshot, and its component status."""
    snaps = [as_dict(s) for s in kube.list(by_kind("Snapshot"), namespace=NAMESPACE)]
    if len(snaps) != 1:
        raise RuntimeError(f"expected one Snapshot, found {len(snaps)}")
    component = ((snaps[0].get("status") or {}).get("components") or {}).get(COMPONENT) or {}
    summary = component["resticStats"][0]["summary"]
    repo = backend / REPO_DIRECTORY.lstrip("/") / component["path"]
    listed = run_timed(["restic", "-r", str(repo), "--no-cache", "snapshots", "--json", summary["id"]], restic_env())
    if listed.returncode != 0:
        raise RuntimeError(f"restic snapshots failed on {repo}: {listed.stderr[-2000:]}")
    paths = json.loads(listed.stdout)[0]["paths"]
    if len(paths) != 1:
        raise RuntimeError(f"restic snapshot {summary['id']} holds {paths}; expected one path")
    return repo, str(summary["id"]), str(paths[0]), component


# ----------------------------------------------------------------------- run
def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def run(size_mib: int, seed: int, repeats: int, keep: bool, work_dir: Path | None) -> dict[str, Any]:
    started = time.perf_counter()
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="kubestash-bench-restore-", dir=work_dir))
    log(f"work dir {root}")
    server: Process | None = None
    try:
        log(f"generating the dataset: {size_mib} MiB, seed {seed}")
        dataset = generate_dataset(root / "dataset", size_mib, seed)
        log(f"  {dataset.files} files, {dataset.bytes / MIB:.0f} MiB in {dataset.generate_s:.1f}s")
        expected = tree_files(dataset.root)
        sample = sample_of(expected)

        def check(path: Path) -> dict[str, Any]:
            return verify(path, dataset, expected, sample)

        data_dir = root / "up"
        data_dir.mkdir()
        server = Process("kubestash up", kubestash_argv("up", data_dir), root / "up.log")
        server.start()
        kubeconfig = data_dir / "kubeconfig"
        server.wait_for_file(kubeconfig)
        log(f"kubestash up pid {server.pid}")
        kube = Client(config=KubeConfig.from_file(str(kubeconfig)), field_manager="bench")
        backend = root / "backend"
        for obj in [*world_objects(backend), *pv_pvc("dataset", dataset.root)]:
            create(kube, obj)
        log(f"backup (not measured): applying {BIG_BC}")
        backup_sampler = TreeSampler(server.pid)
        backup_sampler.start()
        try:
            backup = first_backup(kube, backup_sampler, BIG_BC, "dataset", REPO_DIRECTORY, POLL_S)
        finally:
            backup_sampler.stop()
        log(f"  backup Succeeded {backup['from_apply_s']:.2f}s after apply")
        repo, snapshot_id, snapshot_path, component = restic_snapshot(kube, backend)
        repository = f"{BIG_BC}-repo"

        ours: list[dict[str, Any]] = []
        reference: list[dict[str, Any]] = []
        for i in range(repeats):
            order = ("ours", "reference") if i % 2 == 0 else ("reference", "ours")
            for side in order:
                log(f"{side} restore ({i + 1}/{repeats})")
                if side == "ours":
                    ours.append(ours_once(kube, server.pid, i, root, repository, check))
                else:
                    target = root / f"reference-restore-{i}"
                    reference.append(reference_once(repo, snapshot_id, snapshot_path, target, check))
        up_rss = {
            "up_process_hwm_mb": round(proc_status_mb(server.pid, "VmHWM"), 1),
            "up_process_now_mb": round(proc_status_mb(server.pid, "VmRSS"), 1),
        }
        server_log = {
            "tracebacks": server.log_lines("Traceback"),
            "reconcile_failures": server.log_lines("failed; retrying"),
            "errors": server.log_lines(" ERROR "),
        }
        repository_bytes = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())
    except BaseException:
        if server is not None and server.log_tail():
            log(f"kubestash up log (tail):\n{server.log_tail()}")
        raise
    finally:
        if server is not None:
            server.stop()
        if keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    ours_s = _median([o["restore_s"] for o in ours])
    restic_s = _median([r["restore_s"] for r in reference])
    ratio = round(ours_s / restic_s, 3) if restic_s > 0 else None
    restic_inside = [o["breakdown"].get("restic_restore_s") for o in ours]
    breakdown = {
        k: _median([o["breakdown"][k] for o in ours]) if all(o["breakdown"].get(k) is not None for o in ours) else None
        for k in ours[0]["breakdown"]
    }
    breakdown["overhead_s"] = round(ours_s - restic_s, 3)
    ours_cpu = _median([o["cpu_s"]["self"] + o["cpu_s"]["children"] for o in ours])
    restic_cpu = _median([r["cpu_s"] for r in reference])
    return {
        "benchmark": "restore",
        "repeats": repeats,
        "dataset": dataset.describe(),
        "files": dataset.files,
        "bytes": dataset.bytes,
        "size_mib": size_mib,
        "ours_s": ours_s,
        "restic_s": restic_s,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "met": ratio is not None and ratio <= TARGET_RATIO,
        "breakdown": breakdown,
        "cpu_s": {"ours": ours_cpu, "restic": restic_cpu},
        "cpu_ratio": round(ours_cpu / restic_cpu, 3) if restic_cpu > 0 else None,
        "peak_rss_mb": {
            "ours_tree_sampled": max(o["rss"]["tree_peak_sampled_mb"] for o in ours),
            "ours_restic_sampled": max(o["rss"]["peak_by_process_sampled_mb"].get("restic", 0.0) for o in ours),
            "ours_task_runner_sampled": max(
                o["rss"]["peak_by_process_sampled_mb"].get("task runner", 0.0) for o in ours
            ),
            "ours_up_process_hwm": up_rss["up_process_hwm_mb"],
            "restic": max(r["maxrss_mb"] for r in reference),
        },
        "ours": {
            "runs_s": [o["restore_s"] for o in ours],
            "restic_restore_inside_runs_s": restic_inside,
            "runs": ours,
            "rss": up_rss,
            "server_log": server_log,
        },
        "reference": {
            "description": "plain `restic -r <repo> --no-cache restore <id> --target <empty dir>` of the same restic "
            "snapshot in the same repository, same password; wall time, CPU and peak RSS from wait4",
            "runs_s": [r["restore_s"] for r in reference],
            "runs": reference,
        },
        "snapshot": {
            "restic_id": snapshot_id,
            "path": snapshot_path,
            "repository_bytes": repository_bytes,
            "backup_from_apply_s": backup["from_apply_s"],
            "backup_component_duration": component.get("duration"),
        },
        "notes": [
            "ours_s: from just before the RestoreSession create call to the first poll (every "
            f"{POLL_S * 1000:.0f} ms) that reads status.phase Succeeded; restic_s: the restic restore process's wall "
            "time. Medians over --repeats; the two sides alternate order per repeat.",
            "Both sides restore from the same repository with no cache (our restore task passes --no-cache), into "
            "an empty directory on the same filesystem; the repository is in the page cache for both. Each run "
            "starts after os.sync() and the previous tree is removed first.",
            "breakdown: restic runs under `kubestash up` are seen by a 50 ms /proc sampler (±50 ms): "
            "before_first_restic_s = controller + executor + task runner start-up + plan; restic_ls_s = our task's "
            "`restic ls --json` before the restore; after_restic_restore_s = staging merge, status report, "
            "controller closing the session, poll delay. component_duration_s is the task runner's own clock; "
            "session_duration_s is the controller's, counted from the creationTimestamp (whole seconds), so it can "
            "exceed ours_s. reference.runs[].ls_json_alone_s times that `restic ls --json` alone (not in restic_s).",
            "cpu_s: ours = CPU of `kubestash up` (self) and its reaped descendants (task runner, restic ls, restic "
            "restore) during the restore; restic = the reference process's. Steadier than wall time under load.",
            "peak RSS: ours = largest sampled sum of VmRSS over `kubestash up` and its descendants during the "
            "restore, and per process kind; restic = ru_maxrss of the reference process.",
        ],
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "restic": restic_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "duration_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="dataset size in MiB (default 1024)")
    parser.add_argument("--seed", type=int, default=1, help="dataset seed (default 1)")
    parser.add_argument("--repeats", type=int, default=1, help="restores per side; medians are judged (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (dataset, repository, logs)")
    parser.add_argument("--work-dir", type=Path, help="where to create the work directory (default: the tmp dir)")
    parser.add_argument("--out", type=Path, help="also write the JSON document to this file")
    args = parser.parse_args()
    if args.size_mib < 1 or args.repeats < 1:
        parser.error("--size-mib and --repeats must be at least 1")
    run_and_print(lambda: run(args.size_mib, args.seed, args.repeats, args.keep, args.work_dir), args.out)


if __name__ == "__main__":
    main()
