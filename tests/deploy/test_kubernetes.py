"""The Kubernetes overlays: they render, pass the schemas and the security linter, and the
image started exactly as a rendered pod spec says (args, env, ConfigMap and Secret files,
volumes, user, read-only root) answers its probes as the manifests expect.

No cluster runs here: the pod is run by sandbox.Pod as a kubelet would (mounts, user, PID 1),
and the probes are sent as the kubelet sends them (HTTP GET on the named port).
"""

import os
import re
import shutil
import subprocess

import pytest

import sandbox

VENV_BIN = os.path.dirname(os.path.realpath(shutil.which("pytest") or "/usr/bin/pytest"))


def tool(name):
    for d in (os.path.dirname(os.path.abspath(os.sys.executable)), VENV_BIN):
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    return shutil.which(name) or pytest.fail(f"{name} is not installed (scripts/deploy-check.sh)")


def kinds(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def workload(docs):
    return next(d for d in docs if d["kind"] in ("StatefulSet", "Deployment"))


def test_overlay_passes_schemas_and_security_linter(overlay, tmp_path):
    """kubernetes-validate (strict) and checkov find no error in the rendered overlay."""
    name, text, docs = overlay
    f = tmp_path / f"{name}.yaml"
    f.write_text(text)
    r = subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet", str(f)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([tool("checkov"), "-f", str(f), "--framework", "kubernetes", "--compact",
                        "--quiet", "--skip-download"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Failed checks: 0" in r.stdout, r.stdout


def test_overlay_hardening_and_shutdown_budget(overlay):
    """Non-root, read-only root, no capabilities, RuntimeDefault seccomp, probes on the
    metrics port, and a termination grace above the config's drain time (plus preStop)."""
    name, _, docs = overlay
    w = workload(docs)
    spec = w["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    config = configmap_files(docs)["config.toml"].decode()
    grace = int(re.search(r'query_timeout_grace_period = "(\d+)s"', config).group(1))
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    assert spec["terminationGracePeriodSeconds"] > grace + pre_stop
    if name == "single-node":
        assert w["kind"] == "StatefulSet" and w["spec"]["volumeClaimTemplates"]
    else:
        k = kinds(docs)
        assert w["kind"] == "Deployment" and w["spec"]["replicas"] == 3
        assert pre_stop > 0
        assert k[("PodDisruptionBudget", "origin")]["spec"]["maxUnavailable"] == 1
        hpa = k[("HorizontalPodAutoscaler", "origin")]["spec"]
        assert hpa["metrics"][0]["resource"]["name"] == "cpu" and hpa["minReplicas"] == 3
        assert spec["topologySpreadConstraints"]
        ann = k[("Ingress", "origin")]["metadata"]["annotations"]
        assert ann["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
        assert "[storage.s3]" in config


def mebibytes(quantity):
    assert quantity.endswith("Mi"), quantity
    return int(quantity[:-2])


def configmap_files(docs):
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    return {k: v.encode() for k, v in cm["data"].items()}


def secret_files(docs):
    s = next(d for d in docs if d["kind"] == "Secret")
    return {k: sandbox.b64(v) for k, v in s["data"].items()}


def volumes_of(docs, rootfs):
    """Host directories standing in for the pod's volumes, keyed by mount path, and the
    mount points created in the root filesystem (a runtime does the same)."""
    spec = workload(docs)["spec"]["template"]["spec"]
    c = spec["containers"][0]
    fs_group = spec["securityContext"].get("fsGroup", spec["securityContext"]["runAsGroup"])
    by_name = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {}
    for m in c["volumeMounts"]:
        v = by_name.get(m["name"])
        if v is None:  # a volumeClaimTemplate: a fresh volume writable by fsGroup
            host = sandbox.volume_dir(gid=fs_group, mode=0o770)
        elif "configMap" in v:
            host = sandbox.files_dir(configmap_files(docs))
        elif "secret" in v:
            host = sandbox.files_dir(secret_files(docs), gid=fs_group,
                                     mode=v["secret"].get("defaultMode", 0o644))
        elif "emptyDir" in v:
            host = sandbox.temp_dir("origin-empty-")
            os.chmod(host, 0o1777)
        else:
            raise AssertionError(f"volume kind not emulated: {v}")
        os.makedirs(rootfs + m["mountPath"], exist_ok=True)
        mounts[m["mountPath"]] = (host, bool(m.get("readOnly")))
    return mounts


def start_pod(netns, image, docs, rootfs, hosts=None):
    spec = workload(docs)["spec"]["template"]["spec"]
    c = spec["containers"][0]
    img = image.config["config"]
    argv = img["Entrypoint"] + c.get("args", img["Cmd"])
    env = dict(e.split("=", 1) for e in img["Env"])
    env.update({e["name"]: e["value"] for e in c.get("env", [])})
    mounts = volumes_of(docs, rootfs)
    if hosts:  # the kubelet-managed /etc/hosts; here it also stands in for cluster DNS
        f = sandbox.temp_file("origin-hosts-")
        open(f, "w").write(hosts)
        os.chmod(f, 0o644)
        open(os.path.join(rootfs, "etc", "hosts"), "w").close()
        mounts["/etc/hosts"] = (f, True)
    sc = spec["securityContext"]
    user = f"{sc['runAsUser']}:{sc['runAsGroup']}"
    read_only = c["securityContext"]["readOnlyRootFilesystem"]
    return sandbox.Pod(netns, rootfs, argv, env, user, mounts=mounts, read_only_root=read_only)


def probe(netns, c, kind):
    get = c[kind]["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in c["ports"] if p["name"] == port)
    return netns.http(f"http://127.0.0.1:{port}{get['path']}")


def push_and_pull(netns, image, base, tmp_path):
    """The image's archive pushed by ci with skopeo, refused anonymously, pulled anonymously."""
    dest = f"docker://{base}/library/origin:{image.tag}"
    anon = netns.run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
                      f"oci-archive:{image.archive}", dest], timeout=300)
    assert anon.returncode != 0
    sandbox.skopeo(netns, "copy", "--dest-tls-verify=false", "--dest-creds", "ci:s3cret",
                   f"oci-archive:{image.archive}", dest)
    sandbox.skopeo(netns, "copy", "--src-tls-verify=false", dest, f"oci:{tmp_path}/pulled:x")


def push_blob_monolithic(netns, base, tmp_path):
    """A blob pushed by ci in one POST, refused anonymously, read back anonymously."""
    data = os.urandom(100_000)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    digest = "sha256:" + __import__("hashlib").sha256(data).hexdigest()
    url = f"http://{base}/v2/library/blob/blobs/uploads/?digest={digest}"
    args = ["-X", "POST", "--data-binary", f"@{blob}", "-H", "Content-Type: application/octet-stream"]
    assert netns.http(url, *args)[0] == 401
    assert netns.http(url, "-u", "ci:s3cret", *args)[0] == 201
    out = tmp_path / "blob.out"
    r = netns.run(["curl", "-sS", "-f", "-L", "-o", str(out),
                   f"http://{base}/v2/library/blob/blobs/{digest}"])
    assert r.returncode == 0 and out.read_bytes() == data, r.stderr


def check_pod(netns, image, docs, pod, tmp_path, push="skopeo"):
    c = workload(docs)["spec"]["template"]["spec"]["containers"][0]
    http = next(p["containerPort"] for p in c["ports"] if p["name"] == "http")
    # An anonymous /v2/ is challenged (so clients log in to push).
    netns.wait_http(f"http://127.0.0.1:{http}/v2/", want=401, proc=pod)
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        status, body = probe(netns, c, kind)
        assert status == 200, (kind, status, body, pod.logs())
    _, status = pod.pid1()
    assert status["Uid"].split()[0] == "65532" and status["NSpid"].split()[-1] == "1"
    # Metrics on their own port only (expose_on_main = false), with the build stamp.
    assert netns.http(f"http://127.0.0.1:{http}/metrics")[0] == 404
    metrics_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "metrics")
    status, text = netns.http(f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == 200 and "origin_build_info{" in text
    # The identity's hash comes from the Secret file: ci logs in and pushes, anonymous may
    # not push; anonymous pulls are allowed by the overlay's policy.
    base = f"127.0.0.1:{http}"
    assert netns.http(f"http://{base}/v2/", "-u", "ci:s3cret")[0] == 200
    assert netns.http(f"http://{base}/v2/", "-u", "ci:wrong")[0] == 401
    if push == "skopeo":
        push_and_pull(netns, image, base, tmp_path)
    else:
        push_blob_monolithic(netns, base, tmp_path)
    # The memory the manifests request and limit, against what this pod used at its peak.
    _, status = pod.pid1()
    peak_kib = int(status["VmHWM"].split()[0])
    resources = c["resources"]
    limit_kib = mebibytes(resources["limits"]["memory"]) * 1024
    print(f"peak RSS {peak_kib / 1024:.1f} MiB; requested {resources['requests']['memory']}, "
          f"limit {resources['limits']['memory']}")
    assert peak_kib < limit_kib
    grace = workload(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert pod.terminate(within=grace) == 0, pod.logs()


def test_single_node_pod_answers_its_probes(image, rootfs, netns, tmp_path):
    """The single-node StatefulSet's pod, started as rendered, passes its probes, takes a
    push from the Secret's identity, and stops cleanly within its grace period."""
    _, docs = __import__("conftest").render("single-node")
    pod = start_pod(netns, image, docs, rootfs)
    try:
        check_pod(netns, image, docs, pod, tmp_path)
    finally:
        pod.kill()


def test_scale_out_pod_answers_its_probes_on_s3(image, rootfs, netns, tmp_path):
    """The scale-out Deployment's pod, started as rendered against a local S3 server (moto)
    at the config's endpoint (http://minio:9000), passes its probes, takes a push from the
    Secret's identity and stops cleanly within its grace period."""
    _, docs = __import__("conftest").render("scale-out")
    moto = start_moto(netns, 9000)
    try:
        assert netns.run(["curl", "-sS", "-f", "-X", "PUT",
                          "http://127.0.0.1:9000/registry"]).returncode == 0
        pod = start_pod(netns, image, docs, rootfs, hosts="127.0.0.1 localhost\n127.0.0.1 minio\n")
        try:
            # A blob in one POST: a POST, PATCH, PUT upload (skopeo's) fails on S3 at this
            # commit (test_compose.py::test_compose_s3_variant_takes_a_skopeo_push).
            check_pod(netns, image, docs, pod, tmp_path, push="monolithic")
        finally:
            pod.kill()
    finally:
        moto.kill()
        moto.wait()


def start_moto(netns, port):
    server = os.environ.get("ORIGIN_MOTO_SERVER", "/opt/origin-moto/bin/moto_server")
    if not os.path.exists(server):
        pytest.fail(f"{server} missing: run scripts/moto.sh")
    # Through scripts/moto_serial.py, which makes moto apply conditional writes atomically
    # as S3 does, with moto's own interpreter (the one on the moto_server script's #! line).
    python = open(server).readline()[2:].split()
    shim = os.path.join(sandbox.REPO, "scripts", "moto_serial.py")
    proc = subprocess.Popen(netns.cmd(python + [shim, "-H", "127.0.0.1", "-p", str(port)]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    netns.wait_http(f"http://127.0.0.1:{port}/", proc=proc)
    return proc
