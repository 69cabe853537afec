"""Replication against `skopeo sync`, in one run (issue 29's bench).

N images, as a CI pipeline makes them: each in its own repository (bench/appI), on two shared
base layers (BASE_MIB, default 16 and 8 MiB) plus a 1 MiB layer and a config of its own, are
pushed to an Origin. Then the same copy to a fresh CNCF distribution 2.8.2 (`docker-registry`)
is made twice, each to its own empty instance:

- `skopeo sync` (one process, the images listed in a YAML source), timed from start to exit;
- Origin's replication: the images were pushed while the target was down, so their jobs wait
  in storage; the target is started, Origin is started again, and the time runs from its
  start until every tag answers at the target.

For each, what the target received is read from its access log: blob uploads completed per
digest (a digest uploaded twice is a blob sent twice), cross-repository mounts, and the bytes
of the uploaded blobs; plus every request. Prints a Markdown table.

    python3 bench/replication.py [--images N] [--rounds R] [--origin BIN] [--base-mib A,B]

bench/replication.sh runs it with the release build and writes the table.
"""
import argparse, gzip, hashlib, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time
import urllib.request, urllib.error

p = argparse.ArgumentParser()
p.add_argument("--images", type=int, default=20)
p.add_argument("--rounds", type=int, default=1)
p.add_argument("--origin", default="target/release/origin")
p.add_argument("--concurrency", type=int, default=4, help="Origin's replication.concurrency")
p.add_argument("--base-mib", default="16,8", help="sizes of the shared base layers")
args = p.parse_args()

ROOT = tempfile.mkdtemp(prefix="origin-bench-repl-")
PROCS = []
ARTIFACT = "application/vnd.oci.image.manifest.v1+json"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def req(method, url, body=None, headers=None):
    r = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(r, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_up(url, within=30):
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            req("GET", url)
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.05)
    raise SystemExit(f"not answering: {url}")


def start(cmd, log):
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    PROCS.append(proc)
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def distribution(name, port=None):
    port = port or free_port()
    d = f"{ROOT}/{name}"
    os.makedirs(d)
    with open(f"{d}/config.yml", "w") as f:
        f.write(f"""version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {d}/data
http:
  addr: 127.0.0.1:{port}
""")
    log = open(f"{d}/log", "w")
    proc = start(["docker-registry", "serve", f"{d}/config.yml"], log)
    wait_up(f"http://127.0.0.1:{port}/v2/")
    return proc, port, f"{d}/log"


def origin_config(port, target_port, data, replicate=True):
    if not replicate:
        return f"""[server]
bind_address = "127.0.0.1"
port = {port}
[log]
filter = "warn"
[storage.fs]
root_dir = "{data}"
[gc]
enabled = false
[[repository]]
namespace = ""
policy_default_allow = true
"""
    return f"""[server]
bind_address = "127.0.0.1"
port = {port}
[log]
filter = "warn"
[storage.fs]
root_dir = "{data}"
[gc]
enabled = false
[[repository]]
namespace = ""
policy_default_allow = true
replications = ["dist"]
[replication.dist]
url = "http://127.0.0.1:{target_port}"
concurrency = {args.concurrency}
retry_backoff_max = "1s"
max_retries = 100
"""


def push_blob(base, repo, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    s, b = req("POST", f"{base}/v2/{repo}/blobs/uploads/?digest={d}", data,
               {"Content-Type": "application/octet-stream"})
    assert s == 201, (s, b)
    return d


def layer_bytes(mib):
    """A real gzip stream (of random bytes, so about `mib` MiB): a copier that compresses
    what it finds uncompressed (skopeo does, to a registry) copies it as it is."""
    return gzip.compress(os.urandom(mib << 20), compresslevel=1)


def push_images(base, shared):
    sizes = {}
    for i in range(args.images):
        repo = f"bench/app{i}"
        layers = shared + [layer_bytes(1)]
        descs = []
        for layer in layers:
            d = push_blob(base, repo, layer)
            sizes[d] = len(layer)
            descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                          "digest": d, "size": len(layer)})
        cfg = json.dumps({"architecture": "amd64", "os": "linux", "i": i}).encode()
        cd = push_blob(base, repo, cfg)
        sizes[cd] = len(cfg)
        m = json.dumps({"schemaVersion": 2, "mediaType": ARTIFACT,
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": cd, "size": len(cfg)},
                        "layers": descs}).encode()
        s, b = req("PUT", f"{base}/v2/{repo}/manifests/v1", m, {"Content-Type": ARTIFACT})
        assert s == 201, (s, b)
    return sizes


def all_arrived(port):
    for i in range(args.images):
        s, _ = req("HEAD", f"http://127.0.0.1:{port}/v2/bench/app{i}/manifests/v1", None,
                   {"Accept": ARTIFACT})
        if s != 200:
            return False
    return True


def received(log_path, sizes):
    """What a distribution's access log says it received."""
    text = open(log_path).read()
    lines = [l for l in text.splitlines() if '"GET ' in l or '"HEAD ' in l or '"PUT ' in l
             or '"POST ' in l or '"PATCH ' in l or '"DELETE ' in l]
    requests = sum(1 for l in lines if "HTTP/1.1\"" in l)
    uploads = {}
    for m in re.finditer(r'"PUT [^" ]*/blobs/uploads/[^" ]*[?&]digest=sha256(?:%3A|:)([0-9a-f]{64})[^"]*" 201', text):
        uploads[m.group(1)] = uploads.get(m.group(1), 0) + 1
    mounts = len(re.findall(r'"POST [^" ]*/blobs/uploads/\?[^"]*mount=[^"]*" 201', text))
    sent = sum(sizes.get("sha256:" + d, 0) * n for d, n in uploads.items())
    twice = sum(1 for n in uploads.values() if n > 1)
    return {"requests": requests, "uploads": sum(uploads.values()), "twice": twice,
            "mounts": mounts, "bytes": sent}


def round_once(r):
    shared = [layer_bytes(int(m)) for m in args.base_mib.split(",")]
    op, target_port = free_port(), free_port()
    data = f"{ROOT}/r{r}-origin"
    with open(f"{ROOT}/origin.toml", "w") as f:
        f.write(origin_config(op, target_port, data))
    olog = open(f"{ROOT}/r{r}-origin.log", "w")
    o = start([args.origin, "serve", "-c", f"{ROOT}/origin.toml"], olog)
    base = f"http://127.0.0.1:{op}"
    wait_up(f"{base}/v2/")
    sizes = push_images(base, shared)
    distinct = sum(sizes.values())
    # Every job has failed (the target is down) and waits out a backoff of at most 1 s from
    # its last attempt: stopped first, so that none is still in its backoff later.
    stop(o)
    time.sleep(1.5)

    # skopeo sync: Origin serves the images, to a fresh distribution. Origin runs without
    # the replication target meanwhile: the jobs wait untouched in storage.
    with open(f"{ROOT}/origin-serve.toml", "w") as f:
        f.write(origin_config(op, target_port, data, replicate=False))
    o = start([args.origin, "serve", "-c", f"{ROOT}/origin-serve.toml"], olog)
    wait_up(f"{base}/v2/")
    sk, sk_port, sk_log = distribution(f"r{r}-skopeo-target")
    with open(f"{ROOT}/sync.yml", "w") as f:
        f.write(f"127.0.0.1:{op}:\n  tls-verify: false\n  images:\n")
        for i in range(args.images):
            f.write(f"    bench/app{i}: [\"v1\"]\n")
    t0 = time.time()
    # The last component of each repository lands under the destination: bench/appI.
    run = subprocess.run(["skopeo", "sync", "--src", "yaml", "--dest", "docker",
                          "--dest-tls-verify=false", f"{ROOT}/sync.yml",
                          f"127.0.0.1:{sk_port}/bench"], capture_output=True, text=True)
    skopeo_s = time.time() - t0
    if run.returncode != 0:
        raise SystemExit(f"skopeo sync failed: {run.stderr[-2000:]}")
    skopeo_ok = all(req("HEAD", f"http://127.0.0.1:{sk_port}/v2/bench/app{i}/manifests/v1",
                        None, {"Accept": ARTIFACT})[0] == 200 for i in range(args.images))
    stop(o)
    stop(sk)

    # Origin's replication, of the same jobs, to another fresh distribution on its port.
    dist, _, dist_log = distribution(f"r{r}-origin-target", target_port)
    t0 = time.time()
    o = start([args.origin, "serve", "-c", f"{ROOT}/origin.toml"], olog)
    while not all_arrived(target_port):
        if time.time() - t0 > 600:
            raise SystemExit("replication did not finish in 600 s")
        time.sleep(0.02)
    origin_s = time.time() - t0
    stop(o)
    stop(dist)
    return {
        "distinct": distinct,
        "skopeo": dict(received(sk_log, sizes), secs=skopeo_s, ok=skopeo_ok),
        "origin": dict(received(dist_log, sizes), secs=origin_s, ok=True),
    }


try:
    results = [round_once(r) for r in range(args.rounds)]
    print(f"{args.images} images in their own repositories, shared base layers of "
          f"{args.base_mib} MiB, 1 MiB and a config each; Origin replication concurrency "
          f"{args.concurrency}; {args.rounds} round(s); distinct content "
          f"{results[0]['distinct'] / 1e6:.1f} MB\n")
    print("| round | copier | time (s) | blob uploads | blobs uploaded twice | mounts | "
          "blob bytes uploaded (MB) | requests at the target | complete |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, res in enumerate(results):
        for name in ("skopeo", "origin"):
            x = res[name]
            label = "skopeo sync" if name == "skopeo" else "Origin replication"
            print(f"| {i + 1} | {label} | {x['secs']:.2f} | {x['uploads']} | {x['twice']} | "
                  f"{x['mounts']} | {x['bytes'] / 1e6:.1f} | {x['requests']} | "
                  f"{'yes' if x['ok'] else 'NO'} |")
    sk = sorted(r["skopeo"]["secs"] for r in results)[len(results) // 2]
    og = sorted(r["origin"]["secs"] for r in results)[len(results) // 2]
    print(f"\nmedian time: skopeo sync {sk:.2f} s, Origin {og:.2f} s: Origin takes "
          f"{og / sk:.2f}x skopeo's time")
finally:
    for proc in PROCS:
        stop(proc)
    if os.environ.get("BENCH_KEEP") != "1":
        shutil.rmtree(ROOT, ignore_errors=True)
    else:
        print("kept", ROOT, file=sys.stderr)
