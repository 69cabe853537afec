"""The container image: its layout, its reproducibility, and that it really runs.

No container engine runs in this sandbox, so the image is run the way a runtime would (see
sandbox.py): unpacked, read-only root, a volume over /var/lib/origin, the image's user,
entrypoint, command and environment, as PID 1 in its own PID and network namespaces.
"""

import json
import os
import re
import subprocess

import conftest
import sandbox

UID = 65532


def test_config_declares_user_port_volume_labels(image):
    """The image config says what a runtime needs: non-root user, port, volume, labels."""
    c = image.config
    assert c["os"] == "linux" and c["architecture"] in ("amd64", "arm64")
    cfg = c["config"]
    assert cfg["User"] == f"{UID}:{UID}"
    assert cfg["ExposedPorts"] == {"5000/tcp": {}}
    assert cfg["Volumes"] == {"/var/lib/origin": {}}
    assert cfg["Entrypoint"] == ["/usr/local/bin/origin"]
    assert cfg["Cmd"] == ["serve", "-c", "/etc/origin/config.toml"]
    labels = cfg["Labels"]
    version = re.search(r'^version = "(.*)"$',
                        open(os.path.join(sandbox.REPO, "Cargo.toml")).read(), re.M).group(1)
    assert labels["org.opencontainers.image.version"] == version == image.tag
    revision = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=sandbox.REPO,
                              capture_output=True, text=True).stdout.strip()
    assert labels["org.opencontainers.image.revision"] == revision
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"]
    assert image.manifest["annotations"]["org.opencontainers.image.revision"] == revision


def test_layer_holds_binary_certificates_and_container_defaults(image):
    """One layer: the binary, CA roots, the user, and a config for a container."""
    m = image.layer_members()
    assert m["usr/local/bin/origin"].mode == 0o755
    assert m["etc/ssl/certs/ca-certificates.crt"].size > 10_000
    assert m["var/lib/origin"].isdir() and (m["var/lib/origin"].uid, m["var/lib/origin"].gid) == (UID, UID)
    assert all(x.mtime == m["etc"].mtime for x in m.values()), "one fixed mtime"
    assert all(x.uname == "" and x.gname == "" for x in m.values())
    names = list(m)
    assert names == sorted(names), "entries sorted"
    root = image.unpack(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"layer-{os.getpid()}"))
    config = open(os.path.join(root, "etc/origin/config.toml")).read()
    assert 'bind_address = "0.0.0.0"' in config and "port = 5000" in config
    assert 'root_dir = "/var/lib/origin"' in config
    assert f"nonroot:x:{UID}:{UID}:" in open(os.path.join(root, "etc/passwd")).read()


def test_two_builds_give_the_same_digests(image, workdir):
    """Reproducible: a second build of the same commit has the same layer, config and
    manifest digests, and the same archive bytes."""
    again = conftest.build_image(os.path.join(workdir, "image-again"))
    assert again.manifest_digest == image.manifest_digest
    assert again.manifest["layers"] == image.manifest["layers"]
    assert again.manifest["config"] == image.manifest["config"]
    assert open(again.archive, "rb").read() == open(image.archive, "rb").read()


def image_argv_env(image):
    cfg = image.config["config"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    return cfg["Entrypoint"] + cfg["Cmd"], env, cfg["User"]


def push_and_pull_itself(netns, image, base, tmp_path, repo, creds=None):
    """The image's own OCI archive is pushed into the running Origin and pulled back
    unchanged (same manifest digest, same layer bytes)."""
    dest = f"docker://{base}/{repo}:{image.tag}"
    auth = ["--dest-creds", creds] if creds else []
    sandbox.skopeo(netns, "copy", "--dest-tls-verify=false", *auth,
                   f"oci-archive:{image.archive}", dest)
    src_auth = ["--src-creds", creds] if creds else []
    raw = sandbox.skopeo(netns, "inspect", "--raw", "--tls-verify=false", *src_auth,
                         f"docker://{base}/{repo}:{image.tag}")
    import hashlib
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == image.manifest_digest
    out = tmp_path / f"pulled-{repo.replace('/', '-')}"
    sandbox.skopeo(netns, "copy", "--src-tls-verify=false", *src_auth,
                   f"docker://{base}/{repo}:{image.tag}", f"oci:{out}:{image.tag}")
    layer = image.manifest["layers"][0]["digest"].split(":")[1]
    assert (out / "blobs" / "sha256" / layer).read_bytes() == image.blob("sha256:" + layer)


def test_image_runs_as_pid1_with_its_defaults_and_stores_itself(image, rootfs, netns, tmp_path):
    """The entrypoint with the image's own defaults listens on 0.0.0.0:5000 as uid 65532,
    stores and serves its own image (skopeo), and exits 0 on SIGTERM as PID 1."""
    argv, env, user = image_argv_env(image)
    pod = sandbox.Pod(netns, rootfs, argv, env, user,
                      mounts={"/var/lib/origin": (sandbox.volume_dir(), False)})
    try:
        netns.wait_http("http://127.0.0.1:5000/v2/", proc=pod)
        pid, status = pod.pid1()
        assert status["NSpid"].split()[-1] == "1", status["NSpid"]
        assert status["Uid"].split()[:2] == [str(UID), str(UID)]
        assert status["Gid"].split()[:2] == [str(UID), str(UID)]
        line = pod.wait_log("origin listening on")
        assert "0.0.0.0:5000" in line, line
        push_and_pull_itself(netns, image, "127.0.0.1:5000", tmp_path, "origin")
        assert pod.terminate(within=40) == 0, pod.logs()
    finally:
        pod.kill()


def test_image_serves_with_io_uring_blocked_and_env_overrides(image, rootfs, netns, tmp_path):
    """With io_uring_setup refused (a runtime's default seccomp profile), the image serves
    through the fallback driver; ORIGIN_BIND_ADDRESS and ORIGIN_PORT override its file."""
    nouring = sandbox.compile_nouring(str(tmp_path))
    argv, env, user = image_argv_env(image)
    env.update(ORIGIN_BIND_ADDRESS="127.0.0.1", ORIGIN_PORT="5080")
    pod = sandbox.Pod(netns, rootfs, argv, env, user, launcher=[nouring],
                      mounts={"/var/lib/origin": (sandbox.volume_dir(), False)})
    try:
        netns.wait_http("http://127.0.0.1:5080/v2/", proc=pod)
        line = pod.wait_log("origin listening on")
        assert "127.0.0.1:5080" in line, line
        assert '"io_driver":"poll"' in line, line
        assert netns.http("http://127.0.0.1:5000/v2/")[0] == 0, "the file's port is not used"
        push_and_pull_itself(netns, image, "127.0.0.1:5080", tmp_path, "mirror/origin")
        assert pod.terminate(within=40) == 0, pod.logs()
    finally:
        pod.kill()


def test_containerfile_declares_the_same_image(image):
    """The Containerfile for Docker/Podman users gives the runtime the same user, port,
    volume, entrypoint, command, environment and labels as scripts/image.sh, from the same
    root filesystem files."""
    text = open(os.path.join(sandbox.REPO, "Containerfile")).read()
    final = text.split("FROM scratch", 1)[1]
    cfg = image.config["config"]

    def instruction(name):
        m = re.search(rf"^{name} (.+)$", final, re.M)
        assert m, name
        return m.group(1).strip()

    assert instruction("USER") == cfg["User"]
    assert [instruction("EXPOSE") + "/tcp"] == list(cfg["ExposedPorts"])
    assert [instruction("VOLUME")] == list(cfg["Volumes"])
    assert json.loads(instruction("ENTRYPOINT")) == cfg["Entrypoint"]
    assert json.loads(instruction("CMD")) == cfg["Cmd"]
    assert instruction("ENV").split() == cfg["Env"]
    assert instruction("STOPSIGNAL") == cfg["StopSignal"]
    for key in cfg["Labels"]:
        if key != "org.opencontainers.image.source" and key != "org.opencontainers.image.created":
            assert key in final, key
    assert "deploy/image/rootfs/etc/." in text
    assert "crt-static" in text


def fake_elf(path, machine):
    """A 64-byte ELF header of a static executable for `machine` (no program headers)."""
    import struct
    head = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    head += struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0, 0, 0, 0, 64, 56, 0, 64, 0, 0)
    path.write_bytes(head)
    return str(path)


def test_several_binaries_make_one_multi_arch_index(tmp_path):
    """Multi-arch ready: one --binary per architecture gives an image index whose tag
    resolves to the manifest of the platform asked for."""
    binaries = [fake_elf(tmp_path / "amd64", 62), fake_elf(tmp_path / "arm64", 183)]
    args = ["python3", os.path.join(sandbox.REPO, "scripts", "oci_image.py"),
            "--version", "0.0.0-test", "--revision", "test",
            "--out", str(tmp_path / "oci"), "--archive", str(tmp_path / "multi.tar")]
    for b in binaries:
        args += ["--binary", b]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    index = json.loads(subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci-archive:{tmp_path}/multi.tar"],
        capture_output=True, text=True, check=True).stdout)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]
    for arch in ("amd64", "arm64"):
        cfg = json.loads(subprocess.run(
            ["skopeo", "inspect", "--config", "--override-arch", arch, "--override-os", "linux",
             f"oci-archive:{tmp_path}/multi.tar"], capture_output=True, text=True,
            check=True).stdout)
        assert cfg["architecture"] == arch
