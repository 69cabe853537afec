"""deploy/compose.yaml (Origin on MinIO) and deploy/compose.single-node.yaml: the configs
they mount pass `origin check-config` inside the image with the compose file's mounts and
secrets, and the S3 variant serves, with a local S3 server (moto) standing in for MinIO at
the compose file's endpoint (MinIO's image cannot be pulled here)."""

import os

import pytest
import yaml

import sandbox
import test_kubernetes

DEPLOY = os.path.join(sandbox.REPO, "deploy")


def service(compose_file):
    path = os.path.join(DEPLOY, compose_file)
    doc = yaml.safe_load(open(path))
    return doc, doc["services"]["origin"]


def pod_for(netns, image, rootfs, compose_file, argv_tail=None, hosts=None):
    """The origin service as compose would run it: image entrypoint, the service's command
    and environment, its bind mounts and secrets (at /run/secrets/<name>), named volumes as
    fresh volumes, tmpfs, read-only root."""
    doc, svc = service(compose_file)
    cfg = image.config["config"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    env.update({k: str(v) for k, v in (svc.get("environment") or {}).items()})
    mounts = {}
    for v in svc.get("volumes", []):
        src, dst, *mode = v.split(":")
        if src.startswith("."):
            mounts[dst] = (os.path.join(DEPLOY, src), "ro" in mode)
        else:
            mounts[dst] = (sandbox.volume_dir(), False)
    os.makedirs(os.path.join(rootfs, "run", "secrets"), exist_ok=True)
    for name in svc.get("secrets", []):
        src = os.path.join(DEPLOY, doc["secrets"][name]["file"])
        open(os.path.join(rootfs, "run", "secrets", name), "w").close()
        mounts[f"/run/secrets/{name}"] = (src, True)
    for t in svc.get("tmpfs", []):
        d = sandbox.files_dir({}, dir_mode=0o1777)
        mounts[t] = (d, False)
    if hosts:
        f = os.path.join(str(rootfs) + "-hosts")
        open(f, "w").write(hosts)
        open(os.path.join(rootfs, "etc", "hosts"), "w").close()  # the mount point
        mounts["/etc/hosts"] = (f, True)
    argv = cfg["Entrypoint"] + (argv_tail or svc.get("command", cfg["Cmd"]))
    return sandbox.Pod(netns, rootfs, argv, env, svc.get("user", cfg["User"]), mounts=mounts,
                       read_only_root=bool(svc.get("read_only")))


@pytest.mark.parametrize("compose_file", ["compose.yaml", "compose.single-node.yaml"])
def test_compose_config_passes_check_config(image, rootfs, netns, compose_file):
    """`origin check-config` on the mounted file, inside the image, with the secrets."""
    pod = pod_for(netns, image, rootfs, compose_file,
                  argv_tail=["check-config", "-c", "/etc/origin/config.toml"])
    rc = pod.proc.wait(timeout=60)
    assert rc == 0 and "configuration OK" in pod.logs(), pod.logs()


def test_compose_s3_variant_takes_a_skopeo_push(image, rootfs, netns, tmp_path):
    """The S3 variant's origin service starts on the bucket, takes a skopeo push from ci
    and serves it back."""
    moto = test_kubernetes.start_moto(netns, 9000)
    try:
        assert netns.run(["curl", "-sS", "-f", "-X", "PUT",
                          "http://127.0.0.1:9000/registry"]).returncode == 0
        pod = pod_for(netns, image, rootfs, "compose.yaml",
                      hosts="127.0.0.1 localhost\n127.0.0.1 minio\n")
        try:
            netns.wait_http("http://127.0.0.1:5000/v2/", want=401, proc=pod)
            dest = f"docker://127.0.0.1:5000/library/origin:{image.tag}"
            sandbox.skopeo(netns, "copy", "--dest-tls-verify=false", "--dest-creds", "ci:s3cret",
                           f"oci-archive:{image.archive}", dest)
            sandbox.skopeo(netns, "copy", "--src-tls-verify=false", dest,
                           f"oci:{tmp_path}/pulled:x")
            assert pod.terminate(within=45) == 0, pod.logs()
        finally:
            pod.kill()
    finally:
        moto.kill()
        moto.wait()


def test_compose_s3_variant_serves(image, rootfs, netns, tmp_path):
    """The S3 variant's origin service starts on the bucket, challenges anonymous clients,
    logs ci in from the compose secret and stores a blob pushed in one request."""
    moto = test_kubernetes.start_moto(netns, 9000)
    try:
        assert netns.run(["curl", "-sS", "-f", "-X", "PUT",
                          "http://127.0.0.1:9000/registry"]).returncode == 0
        pod = pod_for(netns, image, rootfs, "compose.yaml",
                      hosts="127.0.0.1 localhost\n127.0.0.1 minio\n")
        try:
            netns.wait_http("http://127.0.0.1:5000/v2/", want=401, proc=pod)
            assert netns.http("http://127.0.0.1:5000/v2/", "-u", "ci:s3cret")[0] == 200
            test_kubernetes.push_blob_monolithic(netns, "127.0.0.1:5000", tmp_path)
            assert pod.terminate(within=45) == 0, pod.logs()
        finally:
            pod.kill()
    finally:
        moto.kill()
        moto.wait()
