"""Fixtures of the deploy checks: the image (built by scripts/image.sh), its unpacked root
filesystem, the rendered Kubernetes overlays, and a network namespace per test.

ORIGIN_BIN names the binary to put in the image (CI: the debug build `cargo test` made);
without it scripts/image.sh builds the static release binary.
"""

import json
import os
import shutil
import subprocess
import tempfile

import pytest
import yaml

import sandbox

REPO = sandbox.REPO


def build_image(out):
    env = dict(os.environ, ORIGIN_IMAGE_OUT=out)
    r = subprocess.run([os.path.join(REPO, "scripts", "image.sh")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stdout + r.stderr
    version = json.load(open(os.path.join(out, "oci", "index.json")))["manifests"][0][
        "annotations"]["org.opencontainers.image.ref.name"]
    return sandbox.Image(os.path.join(out, "oci"), os.path.join(out, f"origin-{version}.oci.tar"))


@pytest.fixture(scope="session")
def workdir():
    sandbox.need_root()
    d = tempfile.mkdtemp(prefix="origin-deploy-")
    yield d
    shutil.rmtree(d, ignore_errors=True)
    sandbox.remove_temps()


@pytest.fixture(scope="session")
def image(workdir):
    return build_image(os.path.join(workdir, "image"))


@pytest.fixture()
def rootfs(image, tmp_path):
    """A fresh unpacked root per test (the tests add mount points, as a runtime does)."""
    return image.unpack(str(tmp_path / "rootfs"))


@pytest.fixture()
def netns():
    ns = sandbox.NetNs()
    yield ns
    ns.close()


@pytest.fixture(scope="session")
def origin_bin(image, workdir):
    """The binary inside the image, run on the host for check-config."""
    root = image.unpack(os.path.join(workdir, "host-rootfs"))
    return os.path.join(root, "usr", "local", "bin", "origin")


def render(overlay):
    out = subprocess.run(["kubectl", "kustomize", os.path.join(REPO, "deploy", "kubernetes",
                                                               overlay)],
                         capture_output=True, text=True, check=True).stdout
    return out, [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="session", params=["single-node", "scale-out"])
def overlay(request):
    text, docs = render(request.param)
    return request.param, text, docs
