#!/usr/bin/env bash
# Validates deploy/kubernetes/ offline (tests/kubernetes/check_manifests.py says what):
#
#   bash tests/kubernetes/validate.sh
#
# Installs the pinned kubernetes-validate (PyPI; it ships the Kubernetes OpenAPI schemas,
# so no cluster and no network at check time) for $PYTHON if missing, first proves the
# checks catch broken copies of the manifests (--self-test), then checks the real ones,
# with `wsgate --check` on the ConfigMap's config (WSGATE_BIN, default the release build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON="${PYTHON:-python3}"
readonly KUBERNETES_VALIDATE='kubernetes-validate==1.37.0'
# Without WSGATE_BIN, the release build of this tree (cargo makes it current; a binary
# left from an older tree would judge the ConfigMap by old keys).
if [ -z "${WSGATE_BIN:-}" ]; then
    cargo build --release --bin wsgate
    WSGATE_BIN=target/release/wsgate
fi

installed="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null || true)"
if [ "$installed" != "${KUBERNETES_VALIDATE#*==}" ]; then
    echo "installing $KUBERNETES_VALIDATE with $("$PYTHON" -m pip --version)"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        "$KUBERNETES_VALIDATE"
fi
command -v openssl >/dev/null || {
    echo "error: openssl is needed for the throw-away certificate of wsgate --check" >&2
    exit 1
}
echo "-- self-test: each broken copy must fail a check"
"$PYTHON" tests/kubernetes/check_manifests.py --self-test
echo "-- deploy/kubernetes"
"$PYTHON" tests/kubernetes/check_manifests.py --wsgate "$WSGATE_BIN"
