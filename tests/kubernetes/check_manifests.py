#!/usr/bin/env python3
"""Checks deploy/kubernetes/ offline: schemas, and that the pieces fit each other and wsgate.

    python3 tests/kubernetes/check_manifests.py --wsgate target/release/wsgate
    python3 tests/kubernetes/check_manifests.py --self-test   # the checks catch broken copies

Every manifest is validated (strict: unknown fields are errors) against the Kubernetes
OpenAPI schemas that the pinned PyPI package `kubernetes-validate` ships, for the oldest
and newest versions in VERSIONS. The ServiceMonitor (a Prometheus Operator CRD, not in
those schemas) is checked against the fields of its CRD that it uses. Then the
cross-checks: probes on real admin paths and on the port of the ConfigMap's admin.bind,
container ports = listener ports, Service and PDB selectors match the pods, grace period
above preStop + drain_timeout, non-root and read-only, the certificate paths inside the
Secret's mount, no private key committed, and `wsgate --check` accepts the ConfigMap's
wsgate.yaml (its certificate paths pointed at a throw-away pair). Prints one table; exit
0 only when every check passed.
"""

from __future__ import annotations

import argparse
import copy
import os
import pathlib
import re
import subprocess
import sys
import tempfile

try:
    import jsonschema
    import kubernetes_validate
    import yaml
except ImportError as exc:  # pragma: no cover - environment problem, say so loudly
    print(f"error: {exc}; run tests/kubernetes/validate.sh (it installs kubernetes-validate)",
          file=sys.stderr)
    sys.exit(2)

ROOT = pathlib.Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
# preStop sleep needs 1.30 (beta, on by default); the newest the package knows.
VERSIONS = ["1.30.0", "1.37.0"]
# What the admin listener serves (src/control/admin.rs).
ADMIN_PATHS = {"/healthz", "/readyz", "/metrics"}
# The image's USER (Dockerfile).
IMAGE_UID = 10001

# The ServiceMonitor fields this repository uses, as the Prometheus Operator's CRD
# (monitoring.coreos.com/v1) types them; anything else is refused so a typo cannot pass.
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": {"type": "object",
                                                   "additionalProperties": {"type": "string"}}},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}},
                                   "any": {"type": "boolean"}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)(ms|s|m|h))+)$"},
                            "scheme": {"enum": ["http", "https"]},
                        },
                    },
                },
            },
        },
    },
}


class Checks:
    def __init__(self) -> None:
        self.rows: list[tuple[str, bool, str]] = []

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        self.rows.append((name, bool(ok), detail))

    @property
    def failed(self) -> list[str]:
        return [n for n, ok, _ in self.rows if not ok]

    def table(self) -> str:
        lines = [f"{'check':<66} {'result':<6} detail"]
        lines += [f"{n:<66} {'ok' if ok else 'FAIL':<6} {d}" for n, ok, d in self.rows]
        lines.append(f"\nkubernetes manifests: {len(self.rows) - len(self.failed)} passed, "
                     f"{len(self.failed)} failed")
        return "\n".join(lines)


def load() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def find(docs, kind, name=None):
    for _, d in docs:
        if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name):
            return d
    return None


def duration_s(text: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"duration {text!r}")
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]]


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_schemas(docs, c: Checks) -> None:
    for fname, doc in docs:
        kind = doc.get("kind")
        label = f"schema: {fname} {kind}/{doc.get('metadata', {}).get('name', '')}"
        if kind == "ServiceMonitor":
            errors = [e.message for e in jsonschema.Draft7Validator(SERVICE_MONITOR).iter_errors(doc)]
            c.add(label + " (CRD fields)", not errors, "; ".join(errors)[:200])
            continue
        if kind == "Kustomization":
            listed = set(doc.get("resources", []))
            present = {p.name for p in MANIFESTS.glob("*.yaml")} - {fname}
            c.add(label + " lists every manifest", listed == present,
                  f"missing {sorted(present - listed)}, unknown {sorted(listed - present)}")
            continue
        problems = []
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except Exception as e:  # ValidationError, SchemaNotFoundError: both are failures
                problems.append(f"{version}: {getattr(e, 'message', e)}")
        c.add(label, not problems, "; ".join(problems)[:300] or f"strict, {' and '.join(VERSIONS)}")


def wsgate_config(docs) -> dict:
    cm = find(docs, "ConfigMap", "wsgate-config")
    return yaml.safe_load(cm["data"]["wsgate.yaml"])


def check_fit(docs, c: Checks) -> None:
    cfg = wsgate_config(docs)
    dep = find(docs, "Deployment", "wsgate")
    pod = dep["spec"]["template"]["spec"]
    (ctr,) = [x for x in pod["containers"] if x["name"] == "wsgate"]
    ports = {p["name"]: p["containerPort"] for p in ctr.get("ports", [])}

    admin_port = int(cfg["admin"]["bind"].rsplit(":", 1)[1])
    c.add("admin.bind is on all interfaces (probes come from the kubelet)",
          cfg["admin"]["bind"].rsplit(":", 1)[0] in ("0.0.0.0", "[::]"), cfg["admin"]["bind"])
    for probe, want in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/healthz")):
        get = (ctr.get(probe) or {}).get("httpGet")
        if get is None:
            c.add(f"{probe} is an httpGet", probe == "startupProbe", "absent")
            continue
        port = get["port"]
        number = ports.get(port) if isinstance(port, str) else port
        c.add(f"{probe} on {want}", get.get("path") == want and want in ADMIN_PATHS,
              f"path {get.get('path')}")
        c.add(f"{probe} port is admin.bind's", number == admin_port,
              f"port {port} -> {number}, admin.bind port {admin_port}")
    listener_ports = sorted(int(l["bind"].rsplit(":", 1)[1]) for l in cfg["listeners"])
    c.add("container ports = listeners + admin",
          sorted(ports.values()) == sorted(listener_ports + [admin_port]),
          f"container {sorted(ports.values())}, config {listener_ports} + {admin_port}")

    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    c.add("Deployment selector matches its pods",
          selects(dep["spec"]["selector"]["matchLabels"], pod_labels), str(pod_labels))
    pdb = find(docs, "PodDisruptionBudget")
    c.add("PodDisruptionBudget selects the pods",
          pdb is not None and selects(pdb["spec"]["selector"]["matchLabels"], pod_labels), "")
    for _, svc in docs:
        if svc.get("kind") != "Service" or svc["spec"].get("clusterIP") == "None":
            continue
        name = svc["metadata"]["name"]
        targets = [p.get("targetPort") for p in svc["spec"]["ports"]]
        c.add(f"Service {name} selects the pods and targets named ports",
              selects(svc["spec"]["selector"], pod_labels) and all(t in ports for t in targets),
              f"targets {targets}")
    sm = find(docs, "ServiceMonitor")
    admin_svc = next((s for _, s in docs if s.get("kind") == "Service"
                      and selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])), None)
    c.add("ServiceMonitor finds the admin Service and its port",
          admin_svc is not None
          and all(any(p["name"] == e["port"] for p in admin_svc["spec"]["ports"]) for e in sm["spec"]["endpoints"])
          and all(e.get("path", "/metrics") in ADMIN_PATHS for e in sm["spec"]["endpoints"]),
          admin_svc["metadata"]["name"] if admin_svc else "none")
    public = find(docs, "Service", "wsgate")
    c.add("admin port not on the public Service",
          public is not None and all(p.get("targetPort") != "admin" and p.get("port") != admin_port
                                     for p in public["spec"]["ports"]), "")

    drain = duration_s(cfg.get("shutdown", {}).get("drain_timeout", "30s"))
    pre = ((ctr.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    c.add("preStop hook present", bool((ctr.get("lifecycle") or {}).get("preStop")), f"sleep {pre}s")
    c.add("terminationGracePeriodSeconds > preStop + drain_timeout", grace > pre + drain,
          f"{grace} > {pre} + {drain:g}")

    sc, psc = ctr.get("securityContext", {}), pod.get("securityContext", {})
    c.add("non-root as the image's user",
          psc.get("runAsNonRoot") is True and psc.get("runAsUser") == IMAGE_UID,
          f"runAsUser {psc.get('runAsUser')}")
    c.add("read-only root fs, no privilege escalation, no capabilities",
          sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
          and sc.get("capabilities", {}).get("drop") == ["ALL"], "")
    res = ctr.get("resources", {})
    c.add("resources requested and memory limited",
          bool(res.get("requests", {}).get("cpu")) and bool(res.get("requests", {}).get("memory"))
          and bool(res.get("limits", {}).get("memory")), str(res.get("limits")))
    cpu_limit = str(res.get("limits", {}).get("cpu", ""))
    c.add("workers = CPU limit", str(cfg.get("workers")) == cpu_limit,
          f"workers {cfg.get('workers')}, limit {cpu_limit}")

    # Files: --config inside the ConfigMap's mount; certificate paths inside the Secret's.
    mounts = {m["name"]: m["mountPath"] for m in ctr.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    args = ctr.get("args", [])
    conf_path = args[args.index("--config") + 1] if "--config" in args else ""
    cm_mount = next((mounts[n] for n, v in vols.items() if "configMap" in v and n in mounts), None)
    c.add("--config is the ConfigMap's wsgate.yaml",
          cm_mount is not None and conf_path == f"{cm_mount}/wsgate.yaml", conf_path)
    secret = find(docs, "Secret", "wsgate-tls")
    sec_mount = next((mounts[n] for n, v in vols.items()
                      if v.get("secret", {}).get("secretName") == "wsgate-tls" and n in mounts), None)
    files = [p for l in cfg["listeners"] if "tls" in l for p in (l["tls"].get("cert"), l["tls"].get("key"))]
    c.add("certificate paths are keys of the mounted Secret",
          sec_mount is not None and all(
              os.path.dirname(p) == sec_mount and os.path.basename(p) in secret.get("data", {})
              for p in files), ", ".join(files))
    committed = " ".join(str(v) for v in (secret.get("data") or {}).values()) + \
        " ".join(str(v) for v in (secret.get("stringData") or {}).values())
    c.add("no private key committed in the Secret", not committed.strip(),
          "placeholder values are empty")

    headless = [s for _, s in docs if s.get("kind") == "Service" and s["spec"].get("clusterIP") == "None"]
    backends = [b if isinstance(b, str) else b["url"]
                for r in cfg["routes"] for b in r.get("backends", [])]
    hosts = {f"{s['metadata']['name']}.{s['metadata']['namespace']}.svc.cluster.local:{p['port']}"
             for s in headless for p in s["spec"]["ports"]}
    c.add("a backend URL names the headless Service",
          any(re.match(r"wss?://([^/]+)", b)[1] in hosts for b in backends),
          f"backends {backends}, headless {sorted(hosts)}")


def check_wsgate(docs, c: Checks, wsgate: str) -> None:
    """`wsgate --check` on the ConfigMap's wsgate.yaml, certificates swapped for a throw-away pair."""
    text = find(docs, "ConfigMap", "wsgate-config")["data"]["wsgate.yaml"]
    with tempfile.TemporaryDirectory() as tmp:
        crt, key = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
        gen = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", crt, "-days", "1", "-subj", "/CN=wsgate.test"],
            capture_output=True, text=True)
        if gen.returncode != 0:
            c.add("wsgate --check accepts the ConfigMap's wsgate.yaml", False, gen.stderr[-200:])
            return
        path = os.path.join(tmp, "wsgate.yaml")
        with open(path, "w") as f:
            f.write(text.replace("/etc/wsgate/certs/", tmp + "/"))
        run = subprocess.run([wsgate, "--check", "--config", path], capture_output=True, text=True)
        c.add("wsgate --check accepts the ConfigMap's wsgate.yaml", run.returncode == 0,
              (run.stdout + run.stderr).strip().replace(tmp, "TMP")[:200])


def run_all(docs, wsgate: str | None) -> Checks:
    c = Checks()
    check_schemas(docs, c)
    check_fit(docs, c)
    if wsgate:
        check_wsgate(docs, c, wsgate)
    return c


def self_test() -> int:
    """Each broken copy must make some check fail; else the checks would pass anything."""
    def mutate(edit):
        docs = copy.deepcopy(load())
        edit(docs)
        return run_all(docs, None).failed

    def container(docs):
        return find(docs, "Deployment", "wsgate")["spec"]["template"]["spec"]["containers"][0]

    def set_config(docs, old, new):
        cm = find(docs, "ConfigMap", "wsgate-config")
        cm["data"]["wsgate.yaml"] = cm["data"]["wsgate.yaml"].replace(old, new)

    breakages = {
        "liveness on /health": lambda d: container(d)["livenessProbe"]["httpGet"].update(path="/health"),
        "readiness on /healthz": lambda d: container(d)["readinessProbe"]["httpGet"].update(path="/healthz"),
        "admin moved to 9191": lambda d: set_config(d, "0.0.0.0:9090", "0.0.0.0:9191"),
        "admin on loopback": lambda d: set_config(d, "0.0.0.0:9090", "127.0.0.1:9090"),
        "grace period 30": lambda d: find(d, "Deployment")["spec"]["template"]["spec"].update(
            terminationGracePeriodSeconds=30),
        "unknown field": lambda d: container(d).update(imagePulPolicy="Always"),
        "writable root": lambda d: container(d)["securityContext"].update(readOnlyRootFilesystem=False),
        "key committed": lambda d: find(d, "Secret")["data"].update({"tls.key": "LS0tLS1CRUdJTg=="}),
        "ServiceMonitor typo": lambda d: find(d, "ServiceMonitor")["spec"]["endpoints"][0].update(
            intervall="15s"),
        "Service targets a missing port": lambda d: find(d, "Service", "wsgate")["spec"]["ports"][0].update(
            targetPort="http"),
    }
    bad = []
    for name, edit in breakages.items():
        failed = mutate(edit)
        print(f"{name:<36} {'caught by: ' + failed[0] if failed else 'NOT CAUGHT'}")
        if not failed:
            bad.append(name)
    clean = run_all(load(), None).failed
    print(f"{'unchanged manifests':<36} {'pass' if not clean else 'FAIL: ' + ', '.join(clean)}")
    return 1 if bad or clean else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wsgate", help="wsgate binary for --check (skipped when absent)")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    checks = run_all(load(), args.wsgate)
    print(checks.table())
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
