"""Runs Origin's image without a container engine, the way a runtime would.

A network namespace of its own (loopback only) per test, so the image's own defaults
(0.0.0.0:5000) can be used as they are; inside it, a mount and PID namespace where the image's
root filesystem is mounted read-only with volumes bound over it, and the entrypoint runs as
PID 1 under the image's user. Clients (curl, skopeo, moto) join the network namespace with
nsenter. Needs root (CI runs as root).
"""

import base64
import gzip
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# Every wait below has this deadline (moto imports a lot of Python; CI is slow).
START_TIMEOUT = 90.0


# Temporary files and folders made for volumes and logs, removed at the end of the session.
TEMPS = []


def temp_dir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    TEMPS.append(d)
    return d


def temp_file(prefix):
    fd, f = tempfile.mkstemp(prefix=prefix)
    os.close(fd)
    TEMPS.append(f)
    return f


def remove_temps():
    for p in TEMPS:
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.exists(p):
            os.unlink(p)
    TEMPS.clear()


def need_root():
    if os.geteuid() != 0:
        raise RuntimeError("the deploy checks need root (unshare, chroot, mount)")


class Image:
    """An OCI image layout written by scripts/image.sh: its config and unpacked root."""

    def __init__(self, layout, archive):
        self.layout, self.archive = layout, archive
        with open(os.path.join(layout, "index.json")) as f:
            self.index = json.load(f)
        top = self.index["manifests"][0]
        self.tag = top["annotations"]["org.opencontainers.image.ref.name"]
        self.manifest_digest = top["digest"]
        self.manifest = json.loads(self.blob(top["digest"]))
        self.config = json.loads(self.blob(self.manifest["config"]["digest"]))

    def blob(self, digest):
        with open(os.path.join(self.layout, "blobs", "sha256", digest.split(":")[1]), "rb") as f:
            return f.read()

    def layer_members(self):
        data = gzip.decompress(self.blob(self.manifest["layers"][0]["digest"]))
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            return {m.name: m for m in tar.getmembers()}

    def unpack(self, into):
        """The root filesystem with owners and modes as in the layer (as root, like a runtime)."""
        os.makedirs(into, exist_ok=True)
        path = os.path.join(self.layout, "blobs", "sha256",
                            self.manifest["layers"][0]["digest"].split(":")[1])
        subprocess.run(["tar", "-xzf", path, "-C", into, "--numeric-owner",
                        "--same-permissions", "--same-owner"], check=True)
        return into


class NetNs:
    """A network namespace with loopback up, held by a sleeping process."""

    def __init__(self):
        self.proc = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep 3600"])
        deadline = time.monotonic() + 10
        while True:
            r = subprocess.run(self.cmd(["ip", "-o", "link", "show", "lo"]),
                               capture_output=True, text=True)
            if "UP" in r.stdout.split(">")[0]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("loopback did not come up in the namespace")
            time.sleep(0.05)

    def cmd(self, argv):
        return ["nsenter", "-t", str(self.proc.pid), "-n", "--"] + list(argv)

    def run(self, argv, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", START_TIMEOUT)
        return subprocess.run(self.cmd(argv), **kw)

    def http(self, url, *curl_args):
        """(status, body) of a request from inside the namespace."""
        r = self.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10",
                      *curl_args, url])
        body, _, code = r.stdout.rpartition("\n")
        return int(code or 0), body

    def wait_http(self, url, want=200, within=START_TIMEOUT, proc=None):
        deadline = time.monotonic() + within
        last = None
        while time.monotonic() < deadline:
            last = self.http(url)
            if last[0] == want:
                return last
            if proc is not None and proc.poll() is not None:
                logs = proc.logs() if hasattr(proc, "logs") else ""
                raise RuntimeError(f"exited with {proc.returncode} before {url} answered\n{logs}")
            time.sleep(0.1)
        raise RuntimeError(f"{url}: no {want} within {within}s (last {last})")

    def close(self):
        self.proc.kill()
        self.proc.wait()


class Pod:
    """The image's entrypoint as PID 1 in new mount and PID namespaces of `netns`.

    mounts: container path -> (host path, read_only). The root filesystem is read-only when
    read_only_root. launcher: programs run before chroot that exec the rest (nouring).
    """

    def __init__(self, netns, rootfs, argv, env, user, mounts=None, read_only_root=True,
                 launcher=()):
        self.netns = netns
        self.log_path = temp_file("origin-pod-log-")
        mounts = mounts or {}
        lines = ["set -eu", "root=$(mktemp -d)", f"mount --bind {shlex.quote(rootfs)} \"$root\""]
        if read_only_root:
            lines.append("mount -o remount,bind,ro \"$root\"")
        for path, (host, ro) in sorted(mounts.items()):
            target = '"$root"' + shlex.quote(path)
            lines.append(f"mount --bind {shlex.quote(host)} {target}")
            if ro:
                lines.append(f"mount -o remount,bind,ro {target}")
        envs = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
        uid, _, gid = user.partition(":")
        # env -i: the container's environment only; chroot --userspec drops to the image's
        # user; each execs the next, so the entrypoint is PID 1.
        lines.append(
            f"exec {' '.join(shlex.quote(a) for a in launcher)} env -i {envs} "
            f"{shutil.which('chroot')} --userspec={uid}:{gid or uid} --groups={gid or uid} \"$root\" "
            + " ".join(shlex.quote(a) for a in argv))
        script = "\n".join(lines) + "\n"
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(
            netns.cmd(["unshare", "--mount", "--pid", "--fork", "--propagation", "private",
                       "bash", "-c", script]),
            stdout=self.log, stderr=subprocess.STDOUT)
        self.entry_name = os.path.basename(argv[0])

    def pid1(self, within=10.0):
        """The host PID of the entrypoint (PID 1 in its namespace)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for pid in descendants(self.proc.pid):
                try:
                    with open(f"/proc/{pid}/status") as f:
                        status = f.read()
                except OSError:
                    continue
                fields = dict(l.split(":\t", 1) for l in status.splitlines() if ":\t" in l)
                if fields.get("Name", "").strip() == self.entry_name[:15]:
                    return pid, fields
            time.sleep(0.05)
        raise RuntimeError(f"{self.entry_name} not found among the pod's processes")

    def logs(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def wait_log(self, needle, within=START_TIMEOUT):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for line in self.logs().splitlines():
                if needle in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"no log line with {needle!r}:\n{self.logs()}")

    def terminate(self, within):
        """SIGTERM to PID 1, as a runtime stops a container; its exit code."""
        pid, _ = self.pid1()
        os.kill(pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def poll(self):
        return self.proc.poll()

    @property
    def returncode(self):
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            for pid in reversed(descendants(self.proc.pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.kill()
            self.proc.wait()


def descendants(pid):
    """PIDs under `pid`, parents before children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            kids = []
        out.extend(kids)
        todo.extend(kids)
    return out


def volume_dir(uid=65532, gid=65532, mode=0o750):
    """An empty directory owned by the image's user, like a fresh PersistentVolume with
    fsGroup or a named Docker volume initialised from the image."""
    d = temp_dir("origin-vol-")
    os.chown(d, uid, gid)
    os.chmod(d, mode)
    return d


def files_dir(files, uid=0, gid=0, mode=0o644, dir_mode=0o755):
    """A directory holding `files` (name -> bytes), like a ConfigMap or Secret volume."""
    d = temp_dir("origin-files-")
    for name, data in files.items():
        p = os.path.join(d, name)
        with open(p, "wb") as f:
            f.write(data)
        os.chown(p, uid, gid)
        os.chmod(p, mode)
    os.chmod(d, dir_mode)
    return d


def b64(s):
    return base64.b64decode(s)


def skopeo(netns, *args):
    r = netns.run(["skopeo", "--insecure-policy", *args], timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"skopeo {' '.join(args)}: {r.stderr}")
    return r.stdout


def compile_nouring(into):
    """tests/support/nouring.c: makes io_uring_setup fail with EPERM, then execs its
    arguments (what a container runtime's default seccomp profile does)."""
    out = os.path.join(into, "nouring")
    subprocess.run(["gcc", "-O", "-o", out, os.path.join(REPO, "tests", "support", "nouring.c")],
                   check=True)
    return out
