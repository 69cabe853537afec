#!/usr/bin/env python3
"""The web UI in a real browser: starts a real Origin, pushes real content over the
registry API (an index of two platforms with a cosign signature, an SPDX SBOM and an
in-toto attestation as referrers, images with markup in their labels, a namespace tree, a
namespace anonymous callers may not read and one whose tags are immutable, real tar+gzip
layers), then drives headless Chromium through the views at 1280 px and 390 px wide,
asserting on what the page shows: browsing (a layer's files included), then logging in, deleting a tag where the policies allow it, finding no
delete where they do not (a read-only user, an immutable tag), and logging out.

Needs: Debian's `chromium` and `chromium-driver`, and `selenium` from PyPI.
  ORIGIN_BIN=target/release/origin python3 tests/ui_browser.py [--screenshots]
--screenshots writes docs/images/ui-*.png (the README's pictures).
"""

import base64
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = os.path.join(ROOT, "docs", "images")
XSS_LABELS = {
    "org.opencontainers.image.title": "app <script>window.__pwned = 1</script>",
    "evil.img": '"><img src=x onerror="window.__pwned = 2">',
    "evil.control": "bell\u0007esc\u001b[31mred",
    "evil.long": "L" * 5000,
}


EVIL_FILE = 'etc/"><img src=x onerror="window.__pwned = 4">'


def rootfs(arch, tag):
    """A real tar+gzip layer: directories, files, a symlink and a file named with markup."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as t:
        def add(name, kind, data=b"", link=""):
            info = tarfile.TarInfo(name)
            info.type, info.size, info.linkname, info.mode = kind, len(data), link, 0o755
            t.addfile(info, io.BytesIO(data) if data else None)
        add("usr/", tarfile.DIRTYPE)
        add("usr/bin/", tarfile.DIRTYPE)
        add("usr/bin/app", tarfile.REGTYPE, f"#!/bin/sh\n# {arch} {tag}\n".encode() * 40)
        add("bin", tarfile.SYMTYPE, link="usr/bin")
        add(EVIL_FILE, tarfile.REGTYPE, b"x")
    return out.getvalue()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """A real `origin serve` on 127.0.0.1 and a minimal client of its API."""

    def __init__(self, binary):
        self.dir = tempfile.mkdtemp(prefix="origin-ui-browser-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        def hashed(pw):
            return subprocess.run([binary, "hash-password"], input=pw + "\n", capture_output=True,
                                  text=True, check=True).stdout.strip()
        alice, bob = hashed("alice-pw"), hashed("bob-pw")
        config = f"""
[server]
bind_address = "127.0.0.1"
port = {self.port}
workers = 2
[storage.fs]
root_dir = "{self.dir}/data"
[ui]
title = "Origin"
[identity.alice]
username = "alice"
password = "{alice}"
[identity.bob]
username = "bob"
password = "{bob}"
[[repository]]
namespace = "locked"
immutable_tags = true
policy_default_allow = false
policies = ['identity.id == "alice"', 'request.action.startsWith("get") || request.action.startsWith("list")']
[[repository]]
namespace = ""
policy_default_allow = false
policies = ['identity.id == "alice"', 'request.action.startsWith("get") || request.action.startsWith("list")']
[[repository]]
namespace = "private"
policy_default_allow = false
policies = ['identity.id == "alice"']
[[repository]]
namespace = "tools"
policy_default_allow = true
retention = ["image.tag == 'latest'"]
"""
        path = os.path.join(self.dir, "config.toml")
        with open(path, "w") as f:
            f.write(config)
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen([binary, "serve", "-c", path], stdout=self.log, stderr=self.log)
        self.auth = "Basic " + base64.b64encode(b"alice:alice-pw").decode()
        for _ in range(100):
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("origin did not start; see " + self.log.name)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)
        shutil.rmtree(self.dir, ignore_errors=True)

    def request(self, method, path, body=b"", content_type=None):
        req = urllib.request.Request(self.base + path, data=body if method in ("POST", "PUT") else None,
                                     method=method)
        req.add_header("Authorization", self.auth)
        if content_type:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()

    def blob(self, repo, data, media_type="application/octet-stream"):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        self.request("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", data, "application/octet-stream")
        return {"mediaType": media_type, "digest": d, "size": len(data)}

    def manifest(self, repo, ref, m):
        body = json.dumps(m).encode()
        d = "sha256:" + hashlib.sha256(body).hexdigest()
        self.request("PUT", f"/v2/{repo}/manifests/{ref or d}", body, m["mediaType"])
        return {"mediaType": m["mediaType"], "digest": d, "size": len(body)}

    def image(self, repo, tag, arch, labels, layers=2):
        config = {
            "created": "2026-03-01T12:00:00Z", "os": "linux", "architecture": arch,
            "config": {"Entrypoint": ["/usr/bin/app"], "Cmd": ["--listen", ":8080"],
                       "Env": ["PATH=/usr/bin:/bin", "APP_MODE=production"], "WorkingDir": "/srv",
                       "Labels": labels, "ExposedPorts": {"8080/tcp": {}}},
            "history": [{"created_by": "ADD rootfs.tar.gz /"}, {"created_by": "COPY app /usr/bin/app"},
                        {"created_by": "ENV APP_MODE=production", "empty_layer": True}],
        }
        cfg = self.blob(repo, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
        ls = [self.blob(repo, rootfs(arch, tag), "application/vnd.oci.image.layer.v1.tar+gzip")]
        ls += [self.blob(repo, os.urandom(1000 * (i + 1) + len(arch)), "application/vnd.oci.image.layer.v1.tar+gzip")
               for i in range(1, layers)]
        return self.manifest(repo, tag, {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                         "config": cfg, "layers": ls})

    def referrer(self, repo, subject, artifact_type, payload):
        empty = self.blob(repo, b"{}", "application/vnd.oci.empty.v1+json")
        layer = self.blob(repo, payload, artifact_type)
        return self.manifest(repo, None, {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": artifact_type, "config": empty, "layers": [layer], "subject": subject,
            "annotations": {"org.opencontainers.image.created": "2026-03-01T12:05:00Z"}})


def push_content(reg):
    amd = reg.image("library/app", None, "amd64", XSS_LABELS)
    arm = reg.image("library/app", None, "arm64", {"org.opencontainers.image.title": "app"})
    amd["platform"] = {"os": "linux", "architecture": "amd64"}
    arm["platform"] = {"os": "linux", "architecture": "arm64", "variant": "v8"}
    index = reg.manifest("library/app", "1.0", {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [amd, arm],
        "annotations": {"org.opencontainers.image.source": "https://example.com/app",
                        "evil": '<b onmouseover="window.__pwned = 3">hover</b>'}})
    reg.referrer("library/app", index, "application/vnd.dev.cosign.artifact.sig.v1+json", b"signature")
    reg.referrer("library/app", index, "application/spdx+json", b'{"spdxVersion": "SPDX-2.3"}')
    reg.referrer("library/app", index, "application/vnd.in-toto+json", b'{"_type": "https://in-toto.io/Statement/v1"}')
    reg.image("library/app", "latest", "amd64", {"org.opencontainers.image.version": "1.1"})
    for name in ["team/api/server", "team/api/worker", "team/web", "tools/debug"]:
        reg.image(name, "latest", "amd64", {}, layers=1)
    reg.image("private/vault", "latest", "amd64", {}, layers=1)
    reg.image("locked/base", "1.0", "amd64", {}, layers=1)
    return index


class Page:
    def __init__(self, base):
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1280,1000", "--hide-scrollbars"]:
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        self.base = base

    def width(self, w, h):
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": w < 600})

    def open(self, fragment):
        url = self.base + "/ui/" + fragment
        self.stale()
        if self.driver.current_url == url:
            self.driver.refresh()
        else:
            self.driver.get(url)
        return self.ready()

    def stale(self):
        """Marks the view shown as old, so that ready() waits for the next one."""
        self.driver.execute_script(
            "document.querySelectorAll('.view').forEach((v) => v.removeAttribute('data-ready'))")

    def click(self, selector):
        """Clicks what leads to another view, and waits for that view."""
        self.stale()
        self.css(selector)[0].click()
        return self.ready()

    def ready(self):
        WebDriverWait(self.driver, 20).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".view[data-ready=true]"))
        return self.driver.find_element(By.CSS_SELECTOR, ".view")

    def fill(self, selector, value):
        wait_for(lambda: self.css(selector), selector)
        [el] = self.css(selector)
        el.clear()
        el.send_keys(value)

    def login(self, user, password):
        self.click("#login-link")
        self.fill("#username", user)
        self.fill("#password", password)
        self.stale()
        self.css("#login-submit")[0].click()
        wait_for(lambda: [e.text for e in self.css("#who")] == [user], "logged in as " + user)
        self.ready()

    def logout(self):
        self.stale()
        self.css("#logout")[0].click()
        wait_for(lambda: self.css("#login-link") and not self.css("#who"), "logged out")
        self.ready()

    def text(self):
        return self.driver.find_element(By.TAG_NAME, "main").text

    def css(self, selector):
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def shot(self, name, enabled):
        if enabled:
            os.makedirs(IMAGES, exist_ok=True)
            self.driver.save_screenshot(os.path.join(IMAGES, f"ui-{name}.png"))

    def assert_safe(self):
        d = self.driver
        assert d.execute_script("return window.__pwned === undefined"), "pushed markup ran"
        assert not self.css("main img"), "pushed markup became an element"
        assert d.execute_script("return document.documentElement.scrollWidth") <= \
            d.execute_script("return window.innerWidth") + 1, "the page is wider than the window"
        severe = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, f"browser errors: {severe}"


def wait_for(fn, what):
    end = time.time() + 10
    while time.time() < end:
        try:
            if fn():
                return
        except StaleElementReferenceException:
            pass  # the page redrew what was looked at: look again
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def browse(page, reg, index, shots, suffix=""):
    host = f"127.0.0.1:{reg.port}"
    # Repositories: the tree at the top, with namespaces as folders; never the private one.
    page.driver.get(reg.base + "/")
    page.ready()
    assert page.driver.current_url.startswith(reg.base + "/ui/"), page.driver.current_url
    text = page.text()
    for want in ["library/", "team/", "tools/"]:
        assert want in text, f"{want} missing from:\n{text}"
    assert "private" not in text and "vault" not in text, "anonymous sees a denied namespace"
    page.shot("repositories" + suffix, shots)
    # Filter: a substring over the loaded names, shown flat.
    page.css("#filter")[0].send_keys("api")
    wait_for(lambda: "team/api/server" in page.text() and "tools" not in page.text(), "the filter")
    # A namespace: its folders and repositories.
    page.open("#/repos?ns=team")
    wait_for(lambda: "api/" in page.text() and "web" in page.text(), "the team namespace")
    # Each repository of the level with its stored size (folders with their counts).
    wait_for(lambda: [e.text for e in page.css("#repo-list .size")] and
             page.css("#repo-list .size")[0].text.endswith("B"), "the stored size of team/web")
    # A repository with retention rules: the rules, and the tag the next pass would delete.
    reg.image("tools/debug", "old", "amd64", {"n": "old"}, layers=1)
    page.open("#/repo?name=tools/debug")
    wait_for(lambda: "image.tag == 'latest'" in "".join(e.text for e in page.css("#retention")), "the retention rules")
    wait_for(lambda: [b.text for b in page.css("#tags .badge.due")] == ["retention: due"], "the retention marker")
    # A repository: tags with digests and sizes, filter, pull commands.
    page.open("#/repo?name=library/app")
    rows = page.css("#tags tbody tr")
    assert len(rows) == 2, page.text()
    assert "latest" in page.text() and "1.0" in page.text()
    assert f"docker pull {host}/library/app:latest" in page.text()
    assert f"docker pull {host}/library/app@sha256:" in page.text()
    [podman] = [b for b in page.css("#pull .tab") if b.text == "podman"]
    podman.click()
    wait_for(lambda: f"podman pull {host}/library/app@sha256:" in page.text(), "the podman commands")
    assert "docker pull" not in page.text()
    page.css("#pull .tab")[0].click()
    # Pushed and last-pulled times beside each tag; the untagged manifests below (the
    # index's two children and its three referrers; on the second pass also the image whose
    # tag the first pass deleted).
    heads = [th.text for th in page.css("#tags thead th")]
    assert "Pushed" in heads and "Last pulled" in heads, heads
    assert "ago" in rows[0].text, rows[0].text
    wait_for(lambda: "stored (" in page.css("#summary")[0].text, "the repository's stored size")
    wait_for(lambda: len(page.css("#untagged tbody tr")) == (5 if not suffix else 6), "the untagged manifests")
    page.shot("repository" + suffix, shots)
    page.css("#filter")[0].send_keys("1.")
    wait_for(lambda: len(page.css("#tags tbody tr")) == 1, "the tag filter")
    # The index: platforms leading to each child, referrers with badges.
    page.click("#tags a.tag")
    wait_for(lambda: page.css(".referrer-group"), "the referrers")
    text = page.text()
    assert "index" in page.css("#kind")[0].text
    assert index["digest"] in text
    platforms = [a.text for a in page.css("#platforms a.platform")]
    assert platforms == ["linux/amd64", "linux/arm64/v8"], platforms
    badges = sorted(b.text for b in page.css("#referrers .badge"))
    assert badges == ["SPDX", "cosign", "in-toto"], badges
    assert '<b onmouseover="window.__pwned = 3">hover</b>' in text, "the annotation shows as text"
    page.assert_safe()
    page.shot("index" + suffix, shots)
    # A child image: config, labels (markup shown as text), layers.
    page.click("#platforms a.platform")
    text = page.text()
    assert "image" in page.css("#kind")[0].text
    assert '["/usr/bin/app"]' in text and "APP_MODE=production" in text, text
    assert "app <script>window.__pwned = 1</script>" in text
    assert '"><img src=x onerror="window.__pwned = 2">' in text
    assert "bell\ufffdesc\ufffd[31mred" in text, "control characters shown as U+FFFD"
    assert len(page.css("#layers tbody tr")) == 2
    # 5000 characters: cut to 4096 and marked by the server, folded to 300 by the page.
    assert "L" * 301 not in text, "a long label is folded"
    [fold] = [b for b in page.css("#labels button.fold") if b.text == "show all 4097 characters"]
    fold.click()
    wait_for(lambda: "L" * 4096 + "\u2026" in page.text(), "the long label unfolded")
    assert "L" * 4097 not in page.text()
    assert "COPY app /usr/bin/app" in text
    # The files in the first layer, listed by the server from the stored tar+gzip.
    page.css("#layers button.list-files")[0].click()
    wait_for(lambda: "usr/bin/app" in "".join(e.text for e in page.css("#file-list")), "the layer's files")
    listed = page.css("#file-list")[0].text
    assert "bin \u2192 usr/bin" in listed, listed
    assert EVIL_FILE in listed, "a file name with markup shows as text"
    [app] = [a for a in page.css("#file-list a.file") if a.text == "usr/bin/app"]
    assert "/ui/api/layer-file?" in app.get_attribute("href") and app.get_attribute("download") is not None
    page.assert_safe()
    page.driver.execute_script("document.getElementById('layers').scrollIntoView()")
    page.shot("files" + suffix, shots)
    page.driver.execute_script("document.getElementById('config').scrollIntoView()")
    page.shot("image" + suffix, shots)


def manage(page, reg, shots, suffix=""):
    """Log in, delete where allowed, no delete where not, log out."""
    doomed = "old" + (suffix or "-wide")
    reg.image("library/app", doomed, "amd64", {}, layers=1)
    page.open("#/repo?name=library/app")
    assert not page.css("#tags button.delete"), "anonymous is offered a delete"
    # A wrong password: the form says so, nobody is logged in.
    page.click("#login-link")
    page.fill("#username", "bob")
    page.fill("#password", "wrong")
    page.css("#login-submit")[0].click()
    wait_for(lambda: "invalid username or password" in page.text(), "the refusal")
    assert not page.css("#who")
    # The browser logs the refused log-in (401) as an error: expected here, and drained.
    assert all("api/login" in e["message"] for e in page.driver.get_log("browser"))
    page.shot("login" + suffix, shots)
    page.open("#/repo?name=library/app")
    # bob may read but not delete: no button, here or on the manifest.
    page.login("bob", "bob-pw")
    assert doomed in page.text()
    assert not page.css("#tags button.delete"), "a read-only user is offered a delete"
    page.open(f"#/manifest?repo=library/app&ref={doomed}")
    assert not page.css("#delete")
    page.logout()
    # alice may: delete with a confirmation, and the tag is gone from the registry too.
    page.open("#/repo?name=library/app")
    page.login("alice", "alice-pw")
    [button] = page.css(f'#tags button.delete[data-tag="{doomed}"]')
    button.click()
    wait_for(lambda: page.css("#confirm"), "the confirmation")
    assert doomed in page.css("#confirm")[0].text
    page.shot("delete" + suffix, shots)
    page.css("#cancel-delete")[0].click()
    wait_for(lambda: not page.css("#confirm"), "the cancelled confirmation")
    assert doomed in json.loads(reg.request("GET", "/v2/library/app/tags/list")[1])["tags"]
    page.css(f'#tags button.delete[data-tag="{doomed}"]')[0].click()
    wait_for(lambda: page.css("#confirm-delete"), "the confirmation")
    page.css("#confirm-delete")[0].click()
    wait_for(lambda: f"Deleted the tag {doomed}." in page.text(), "the deletion")
    assert not page.css(f'#tags a.tag') or doomed not in [a.text for a in page.css("#tags a.tag")]
    assert doomed not in json.loads(reg.request("GET", "/v2/library/app/tags/list")[1])["tags"]
    # An immutable tag: no delete, and why.
    page.open("#/repo?name=locked/base")
    assert not page.css("#tags button.delete")
    assert "immutable: cannot be deleted" in page.text()
    page.open("#/manifest?repo=locked/base&ref=1.0")
    assert not page.css("#delete")
    assert "immutable_tags" in page.css("#immutable")[0].text
    page.assert_safe()
    # Logged out, the private namespace is refused again, with a way to log in.
    page.logout()
    page.open("#/repo?name=private/vault")
    assert page.css("#login-hint"), page.text()
    assert all("private%2Fvault" in e["message"] for e in page.driver.get_log("browser"))
    assert "vault" not in "".join(a.text for a in page.css("#tags a"))


def main():
    shots = "--screenshots" in sys.argv
    binary = os.environ.get("ORIGIN_BIN", os.path.join(ROOT, "target", "debug", "origin"))
    os.environ.setdefault("SE_OFFLINE", "true")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    reg = Registry(binary)
    page = None
    try:
        index = push_content(reg)
        page = Page(reg.base)
        page.width(1280, 1000)
        browse(page, reg, index, shots)
        manage(page, reg, shots)
        page.width(390, 844)
        browse(page, reg, index, shots, suffix="-390")
        manage(page, reg, shots, suffix="-390")
        print("ui_browser: all views, log-in, delete and log-out checked at 1280 px and 390 px")
    finally:
        if page:
            page.driver.quit()
        reg.stop()


if __name__ == "__main__":
    main()
