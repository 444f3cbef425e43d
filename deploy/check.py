#!/usr/bin/env python3
"""Check the shipped deployment files offline.

For every kustomize base under deploy/kubernetes/:
  - each resource it lists is validated against the Kubernetes OpenAPI schemas
    bundled by the `kubernetes-validate` package (strict: unknown fields fail);
  - with `kubectl` on PATH, the rendered base (`kubectl kustomize`) is validated too;
  - every attache config embedded in a ConfigMap (a data key ending in .yaml) is
    checked with `attache validate --skip-files` (no certificates needed).
Each Deployment's terminationGracePeriodSeconds must cover its preStop sleep plus
the drain_timeout of the attache config it mounts. The rules the bases promise are
checked too (policy_errors): every container non-root with a numeric UID, a
read-only root filesystem, no privilege escalation and every capability dropped;
the attache container's readiness and liveness probes are GET /ready and /live on
the port of the mounted config's health_listener (on every interface, the admin
endpoint on loopback), its preStop fails readiness and then POSTs
/drain_listeners; a Deployment behind a LoadBalancer Service has a
PodDisruptionBudget; the Dockerfile's USER is numeric. With `systemd-analyze` on PATH, deploy/systemd/attache.service is verified too
(with its binary path pointed at the attache being checked), and its sandboxing
must keep `systemd-analyze security` exposure at 3 or below.

Usage: python3 deploy/check.py [--attache PATH] [--k8s-version 1.33]
       (default attache binary: $ATTACHE_BIN, else target/debug/attache)
Needs: pip install kubernetes-validate
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml
import kubernetes_validate

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(ROOT)


def bases():
    k8s = os.path.join(ROOT, "kubernetes")
    for name in sorted(os.listdir(k8s)):
        if os.path.isfile(os.path.join(k8s, name, "kustomization.yaml")):
            yield os.path.join(k8s, name)


def resources(base):
    with open(os.path.join(base, "kustomization.yaml")) as f:
        kust = yaml.safe_load(f)
    for rel in kust.get("resources", []):
        path = os.path.join(base, rel)
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    yield path, doc


def schema_errors(where, doc, version):
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        return [f"{where}: {doc.get('kind')} {path}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{where}: no schema for {doc.get('kind')}: {e}"]
    return []


def rendered(base):
    out = subprocess.run(
        ["kubectl", "kustomize", base], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"{base}: kubectl kustomize failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def block_start(path, key):
    """(line, column) in `path` where the `key: |` block scalar's text begins."""
    with open(os.path.join(REPO, path)) as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if line.strip() == f"{key}: |":
            body = next((l for l in lines[i + 1 :] if l.strip()), "")
            return i + 1, len(body) - len(body.lstrip())
    return 0, 0


def attache_configs(path, doc):
    if doc.get("kind") != "ConfigMap":
        return
    for key, text in (doc.get("data") or {}).items():
        if key.endswith((".yaml", ".yml")):
            yield path, key, text


def validate_config(attache, path, key, text):
    """`attache validate --skip-files` on an embedded config; its FILE:LINE:COL
    diagnostics are mapped back to the manifest."""
    with tempfile.TemporaryDirectory() as d:
        tmp = os.path.join(d, key)
        with open(tmp, "w") as f:
            f.write(text)
        out = subprocess.run(
            [attache, "validate", "--skip-files", "--config", tmp],
            capture_output=True,
            text=True,
            check=False,
        )
    if out.returncode == 0:
        return []
    line0, indent = block_start(path, key)
    located = re.sub(
        re.escape(tmp) + r":(\d+):(\d+):",
        lambda m: f"{path}:{int(m.group(1)) + line0}:{int(m.group(2)) + indent}:",
        out.stderr + out.stdout,
    )
    return [f"{path} (key {key}): attache validate --skip-files failed:\n{located}"]


def systemd_errors(attache):
    if not shutil.which("systemd-analyze"):
        return []
    with open(os.path.join(ROOT, "systemd", "attache.service")) as f:
        unit = f.read().replace("/usr/local/bin/attache", os.path.abspath(attache))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "attache.service")
        with open(path, "w") as f:
            f.write(unit)
        out = subprocess.run(
            ["systemd-analyze", "verify", path], capture_output=True, text=True, check=False
        )
        # Exposure at most 3.0 (the threshold is in tenths); 1.7 when written.
        sec = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", "--threshold=30", path],
            capture_output=True,
            text=True,
            check=False,
        )
    errors = []
    if out.returncode != 0 or out.stderr.strip():
        errors.append(f"deploy/systemd/attache.service: systemd-analyze verify:\n{out.stderr}")
    if sec.returncode != 0:
        tail = "\n".join(sec.stdout.splitlines()[-3:])
        errors.append(f"deploy/systemd/attache.service: exposure above 3:\n{tail}{sec.stderr}")
    return errors


def seconds(duration):
    """A duration in attache's grammar (`20s`, `1m30s`, `1.5s`) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", duration)
    return sum(float(n) * units[u] for n, u in parts)


def grace_errors(where, docs):
    """terminationGracePeriodSeconds >= preStop sleep + drain_timeout."""
    configs = {}
    for d in docs:
        if d.get("kind") == "ConfigMap":
            text = (d.get("data") or {}).get("attache.yaml")
            if text:
                drain = (yaml.safe_load(text) or {}).get("drain_timeout", "10s")
                configs[d["metadata"]["name"]] = seconds(drain)
    errors = []
    for d in docs:
        if d.get("kind") not in ("Deployment", "DaemonSet"):
            continue
        pod = d["spec"]["template"]["spec"]
        grace = pod.get("terminationGracePeriodSeconds", 30)
        maps = [v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v]
        drain = max((configs[m] for m in maps if m in configs), default=None)
        for c in pod["containers"]:
            cmd = " ".join(
                c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            )
            if drain is None or "drain_listeners" not in cmd:
                continue
            sleep = sum(float(n) for n in re.findall(r"sleep (\d+(?:\.\d+)?)", cmd))
            if grace < sleep + drain + 1:
                errors.append(
                    f"{where}: {d['metadata']['name']}: terminationGracePeriodSeconds {grace} "
                    f"< preStop sleep {sleep:g}s + drain_timeout {drain:g}s + 1s"
                )
    return errors


def mounted_configs(docs, pod):
    """The attache configs (parsed) of the ConfigMaps `pod` mounts."""
    maps = {
        d["metadata"]["name"]: d
        for d in docs
        if d.get("kind") == "ConfigMap" and "attache.yaml" in (d.get("data") or {})
    }
    names = [v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v]
    return [yaml.safe_load(maps[n]["data"]["attache.yaml"]) or {} for n in names if n in maps]


def port_of(address):
    """(host, port) of an `IP:PORT` / `[IPv6]:PORT` address."""
    host, _, port = str(address).rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else None


def container_port(container, port):
    """A probe's `port` (a number or the name of a container port) as a number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def security_errors(where, pod, c):
    """Non-root with a numeric UID, read-only root, no escalation, no capabilities."""
    psc, sc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    errors = []
    if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
        errors.append("runAsNonRoot is not true")
    uid = sc.get("runAsUser", psc.get("runAsUser"))
    if not (isinstance(uid, int) and uid > 0):
        errors.append("no numeric non-zero runAsUser (kubelet cannot verify a user name)")
    if sc.get("readOnlyRootFilesystem") is not True:
        errors.append("readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        errors.append("allowPrivilegeEscalation is not false")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
        errors.append("capabilities: drop [ALL] and add none")
    return [f"{where}: container {c['name']}: {e}" for e in errors]


def probe_errors(where, c, cfg):
    """Probes on the health_listener, which must listen on the pod IP; admin on loopback."""
    errors = []
    health = (cfg.get("health_listener") or {}).get("address")
    if not health:
        return [f"{where}: the attache config has no health_listener for kubelet's probes"]
    host, port = port_of(health)
    if host not in ("0.0.0.0", "::"):
        errors.append(f"health_listener {health} is not reachable on the pod IP")
    admin_host, _ = port_of((cfg.get("admin") or {}).get("address", "127.0.0.1:9901"))
    if admin_host not in ("127.0.0.1", "::1", "localhost"):
        errors.append("the admin endpoint is not on loopback")
    for kind, path in (("readinessProbe", "/ready"), ("livenessProbe", "/live")):
        get = (c.get(kind) or {}).get("httpGet") or {}
        if get.get("path") != path or container_port(c, get.get("port")) != port:
            errors.append(f"{kind} is not GET {path} on the health_listener port {port}")
    cmd = " ".join(c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", []))
    fail, drain = cmd.find("/healthcheck/fail"), cmd.find("/drain_listeners")
    if fail < 0 or drain < fail:
        errors.append("preStop does not POST /healthcheck/fail, then /drain_listeners")
    return [f"{where}: container {c['name']}: {e}" for e in errors]


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def policy_errors(where, docs):
    """The rules the bases promise (see the module doc)."""
    errors = []
    workloads = [d for d in docs if d.get("kind") in ("Deployment", "DaemonSet")]
    for d in workloads:
        at = f"{where}: {d['kind']} {d['metadata']['name']}"
        pod = d["spec"]["template"]["spec"]
        configs = mounted_configs(docs, pod)
        for c in pod["containers"]:
            errors += security_errors(at, pod, c)
            if c.get("image", "").split(":")[0].endswith("attache"):
                errors += [e for cfg in configs[:1] for e in probe_errors(at, c, cfg)]
                if not configs:
                    errors.append(f"{at}: container {c['name']}: mounts no attache ConfigMap")
    balanced = [
        s["spec"].get("selector") or {}
        for s in docs
        if s.get("kind") == "Service" and s["spec"].get("type") == "LoadBalancer"
    ]
    pdbs = [p["spec"]["selector"].get("matchLabels") or {} for p in docs if p.get("kind") == "PodDisruptionBudget"]
    for d in workloads:
        labels = d["spec"]["template"]["metadata"].get("labels") or {}
        if d["kind"] == "Deployment" and any(selects(s, labels) for s in balanced):
            if not any(selects(p, labels) for p in pdbs):
                errors.append(f"{where}: Deployment {d['metadata']['name']} is behind a LoadBalancer Service without a PodDisruptionBudget")
    return errors


def image_user_errors():
    """The image's USER must be numeric: kubelet refuses to verify runAsNonRoot for a name."""
    with open(os.path.join(REPO, "Dockerfile")) as f:
        users = [l.split()[1] for l in f if l.startswith("USER ")]
    if not users or not re.fullmatch(r"\d+(:\d+)?", users[-1]):
        return [f"Dockerfile: the final USER must be numeric (UID:GID), not {users[-1:] or 'unset'}"]
    return []


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--attache",
        default=os.environ.get("ATTACHE_BIN", os.path.join(REPO, "target/debug/attache")),
    )
    p.add_argument("--k8s-version", default="1.33")
    a = p.parse_args()
    if not os.access(a.attache, os.X_OK):
        raise SystemExit(f"no attache binary at {a.attache}; build it or pass --attache")
    errors, checked, configs = [], 0, 0
    for base in bases():
        docs = []
        for path, doc in resources(base):
            docs.append(doc)
            rel = os.path.relpath(path, REPO)
            errors += schema_errors(rel, doc, a.k8s_version)
            checked += 1
            for path_, key, text in attache_configs(rel, doc):
                errors += validate_config(a.attache, path_, key, text)
                configs += 1
        errors += grace_errors(os.path.relpath(base, REPO), docs)
        errors += policy_errors(os.path.relpath(base, REPO), docs)
        if shutil.which("kubectl"):
            for doc in rendered(base):
                errors += schema_errors(f"kubectl kustomize {os.path.relpath(base, REPO)}", doc, a.k8s_version)
    errors += image_user_errors()
    errors += systemd_errors(a.attache)
    for e in errors:
        print(e, file=sys.stderr)
    print(f"{checked} resources, {configs} attache configs: {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
