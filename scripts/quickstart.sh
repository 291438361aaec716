#!/usr/bin/env bash
# The main job on the embedded default: up, apply the example manifests, back up, restore, show the result.
#
# `kubestash up` runs the bundled Kubernetes-compatible API server, the controllers and the local
# executor. kubectl applies examples/quickstart (a local BackupStorage, a RetentionPolicy, the
# encryption Secret, a PV/PVC pair on a sample directory of a few thousand files and a
# BackupConfiguration with pvc-addon). The configuration's initial backup runs by itself; then
# `kubestash trigger --wait` runs another one (incremental) with progress, and the Snapshots and the
# restic snapshot ids are shown -- read back with the stock restic CLI. Then an accident: files deleted and
# overwritten in the volume; examples/quickstart/restore.yaml (a RestoreSession of the latest Snapshot)
# brings every file back, checked against a sha256 manifest taken before the accident.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[kubectl]'
KS=.venv/bin/kubestash
KUBECTL=.venv/bin/kubectl

echo "== kubestash validate -f examples/quickstart"
"$KS" validate -f examples/quickstart --scope directory

echo "== sample data: /tmp/kubestash-quickstart/data"
rm -rf /tmp/kubestash-quickstart
.venv/bin/python - <<'PY'
import os, random
root = "/tmp/kubestash-quickstart/data"
rng = random.Random(42)
for d in range(30):
    os.makedirs(f"{root}/dir-{d:02d}", exist_ok=True)
    for f in range(100):
        words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "kube", "stash"]) for _ in range(200))
        with open(f"{root}/dir-{d:02d}/file-{f:03d}.txt", "w") as out:
            out.write(words + "\n")
with open(f"{root}/blob.bin", "wb") as out:
    out.write(rng.randbytes(8 << 20))
print(f"  3000 text files and an 8 MiB binary under {root}")
PY

DATA=$(mktemp -d -t kubestash-quickstart.XXXXXX)
"$KS" up --data-dir "$DATA" --port 0 >"$DATA/up.log" 2>&1 &
UP_PID=$!
trap 'kill "$UP_PID" 2>/dev/null; wait "$UP_PID" 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do
    [ -s "$DATA/kubeconfig" ] && break
    sleep 0.1
done
export KUBECONFIG="$DATA/kubeconfig"
KUBECTL_CACHE=(--cache-dir "$DATA/kube-cache")

echo "== kubestash up (data in $DATA)"
"$KUBECTL" "${KUBECTL_CACHE[@]}" version 2>/dev/null | sed 's/^/  /'
"$KUBECTL" "${KUBECTL_CACHE[@]}" create namespace demo
"$KUBECTL" "${KUBECTL_CACHE[@]}" apply -f examples/quickstart/storage.yaml -f examples/quickstart/backup.yaml
"$KUBECTL" "${KUBECTL_CACHE[@]}" wait --for=jsonpath='{.status.phase}'=Ready backupstorage/local-storage -n demo --timeout=60s
echo "== the backend: /tmp/kubestash-quickstart/backend/metadata.yaml"
sed 's/^/  /' /tmp/kubestash-quickstart/backend/metadata.yaml
"$KUBECTL" "${KUBECTL_CACHE[@]}" wait --for=jsonpath='{.status.phase}'=Ready backupconfiguration/demo-backup -n demo --timeout=60s
echo "== the initial backup (started by the operator as soon as the configuration was Ready)"
for _ in $(seq 1 600); do
    PHASE=$("$KUBECTL" "${KUBECTL_CACHE[@]}" get backupsessions -n demo -l kubestash.com/invoker-name=demo-backup \
        -o jsonpath='{.items[0].status.phase}' 2>/dev/null || true)
    case "$PHASE" in Succeeded|Failed|Skipped) break ;; esac
    sleep 0.1
done
echo "  initial backup: $PHASE"
echo "== kubestash trigger demo-backup -n demo --wait"
sleep 1  # BackupSession names carry the second they were triggered in
"$KS" trigger demo-backup -n demo --wait
echo "== kubectl get backupsessions,snapshots,repositories -n demo"
"$KUBECTL" "${KUBECTL_CACHE[@]}" get backupsessions,snapshots,repositories -n demo
echo "== restic snapshot ids (read with the stock restic CLI and the Secret's password)"
"$KUBECTL" "${KUBECTL_CACHE[@]}" get snapshots -n demo \
    -o jsonpath='{range .items[*]}{.metadata.name}{"  restic "}{.status.components.dump.resticStats[0].summary.id}{"\n"}{end}' | sed 's/^/  /'
RESTIC_PASSWORD=quickstart-only-change-me restic --no-cache \
    -r /tmp/kubestash-quickstart/backend/demo/data/repository/v1/frequent-backup/dump snapshots

echo "== an accident: 10 directories deleted and the binary overwritten"
MANIFEST="$DATA/before.sha256"
(cd /tmp/kubestash-quickstart/data && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$MANIFEST"
rm -rf /tmp/kubestash-quickstart/data/dir-0*
echo "oops" >/tmp/kubestash-quickstart/data/blob.bin
echo "  $(find /tmp/kubestash-quickstart/data -type f | wc -l) files left of $(wc -l <"$MANIFEST")"
echo "== kubectl apply -f examples/quickstart/restore.yaml"
"$KUBECTL" "${KUBECTL_CACHE[@]}" apply -f examples/quickstart/restore.yaml
for _ in $(seq 1 600); do
    PHASE=$("$KUBECTL" "${KUBECTL_CACHE[@]}" get restoresession/demo-restore -n demo -o jsonpath='{.status.phase}')
    case "$PHASE" in Succeeded|Failed|Invalid|Unknown) break ;; esac
    sleep 0.1
done
"$KUBECTL" "${KUBECTL_CACHE[@]}" get restoresessions -n demo
echo "== the restored volume, checked against the manifest taken before the accident"
(cd /tmp/kubestash-quickstart/data && sha256sum --quiet -c "$MANIFEST") && echo "  all $(wc -l <"$MANIFEST") files restored byte for byte"
[ "$PHASE" = Succeeded ]
