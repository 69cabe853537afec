"""scripts/release.sh: a binary tarball whose `origin --version` names this commit, the
image's OCI archive, and SHA-256 sums that check; the same bytes when run twice."""

import os
import re
import subprocess
import tarfile

import sandbox


def release(out):
    env = dict(os.environ, ORIGIN_RELEASE_OUT=out)
    r = subprocess.run([os.path.join(sandbox.REPO, "scripts", "release.sh")], cwd=sandbox.REPO,
                       env=env, capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stdout + r.stderr
    return sorted(os.listdir(out))


def test_release_artifacts_check_and_run(image, workdir, tmp_path):
    out = os.path.join(workdir, "release")
    files = release(out)
    tarballs = [f for f in files if f.endswith(".tar.gz")]
    assert len(tarballs) == 1 and tarballs[0].startswith(f"origin-{image.tag}-linux-")
    assert f"origin-{image.tag}.oci.tar" in files and "SHA256SUMS" in files
    r = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.count(": OK") == 2, r.stdout + r.stderr
    with open(os.path.join(out, f"origin-{image.tag}.oci.tar"), "rb") as a, \
            open(image.archive, "rb") as b:
        assert a.read() == b.read(), "the release's image is the image"
    with tarfile.open(os.path.join(out, tarballs[0])) as t:
        names = t.getnames()
        t.extractall(tmp_path)
    top = tarballs[0][: -len(".tar.gz")]
    for f in ("origin", "README.md", "CHANGELOG.md", "config.example.toml", "origin.service"):
        assert f"{top}/{f}" in names, names
    v = subprocess.run([str(tmp_path / top / "origin"), "--version"], capture_output=True,
                       text=True).stdout
    assert re.fullmatch(rf"origin {re.escape(image.tag)} \(revision [0-9a-f]{{12}}, built "
                        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)\n", v), v
    if os.environ.get("ORIGIN_BIN"):
        # The binary given is packaged as it is (stripped): it says what it said.
        given = subprocess.run([os.environ["ORIGIN_BIN"], "--version"], capture_output=True,
                               text=True).stdout
        assert v == given
    else:
        # Built by release.sh: stamped with this commit.
        revision = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"],
                                  cwd=sandbox.REPO, capture_output=True, text=True).stdout
        assert f"(revision {revision.strip()}, " in v, v
    again = os.path.join(workdir, "release-again")
    release(again)
    for f in ("SHA256SUMS",):
        assert open(os.path.join(out, f)).read() == open(os.path.join(again, f)).read()
