"""A smoke measurement of replication (not the full bench of issue 29: no skopeo run beside
it): N images sharing two base layers (16 and 8 MiB) and a 1 MiB layer of their own are
pushed to an Origin that replicates to CNCF distribution (`docker-registry`); prints the time
until the last one is at the target, what the replication metrics counted, and how many
upload PUTs distribution saw for each base layer (1 each: no blob sent twice).

    python3 bench/replication_smoke.py [N] [path/to/origin]
"""
import hashlib, json, os, shutil, subprocess, sys, tempfile, time, urllib.request, socket, re
N = int(sys.argv[1]) if len(sys.argv) > 1 else 10
BIN = sys.argv[2] if len(sys.argv) > 2 else "target/release/origin"
root = tempfile.mkdtemp(prefix="origin-repl-smoke-")
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
dp, op = free(), free()
open(f"{root}/dist.yml", "w").write(f"""version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {root}/dist-data
http:
  addr: 127.0.0.1:{dp}
""")
open(f"{root}/origin.toml", "w").write(f"""[server]
bind_address = "127.0.0.1"
port = {op}
workers = 2
[log]
filter = "warn"
[storage.fs]
root_dir = "{root}/origin-data"
[[repository]]
namespace = ""
policy_default_allow = true
replications = ["dist"]
[replication.dist]
url = "http://127.0.0.1:{dp}"
""")
dlog = open(f"{root}/dist.log", "w")
d = subprocess.Popen(["docker-registry", "serve", f"{root}/dist.yml"], stdout=dlog, stderr=dlog)
o = subprocess.Popen([BIN, "serve", "-c", f"{root}/origin.toml"], stderr=subprocess.DEVNULL)
time.sleep(2)
def req(method, url, body=None, headers={}):
    r = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(r) as resp: return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as e: return e.code, e.read(), e.headers
def blob(repo, data):
    dg = "sha256:" + hashlib.sha256(data).hexdigest()
    s, b, _ = req("POST", f"http://127.0.0.1:{op}/v2/{repo}/blobs/uploads/?digest={dg}", data, {"Content-Type": "application/octet-stream"})
    assert s == 201, (s, b)
    return dg
base = [os.urandom(16 << 20), os.urandom(8 << 20)]
try:
    t0 = time.time()
    total = 0
    for i in range(N):
        repo = f"bench/app{i}"
        layers = base + [os.urandom(1 << 20)]
        descs = []
        for l in layers:
            descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob(repo, l), "size": len(l)})
        cfg = json.dumps({"architecture": "amd64", "os": "linux", "i": i}).encode()
        m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(repo, cfg), "size": len(cfg)},
            "layers": descs}).encode()
        s, b, _ = req("PUT", f"http://127.0.0.1:{op}/v2/{repo}/manifests/v1", m, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert s == 201, (s, b)
        total += sum(len(l) for l in layers) + len(cfg)
    t1 = time.time()
    while True:
        ok = all(req("HEAD", f"http://127.0.0.1:{dp}/v2/bench/app{i}/manifests/v1", None, {"Accept": "application/vnd.oci.image.manifest.v1+json"})[0] == 200 for i in range(N))
        if ok: break
        assert time.time() - t1 < 300
        time.sleep(0.05)
    t2 = time.time()
    metrics = req("GET", f"http://127.0.0.1:{op}/metrics")[1].decode()
    sent = {k: v for k, v in re.findall(r'origin_replication_(\w+)\{target="dist"\} (\d+)', metrics)}
    dl = open(f"{root}/dist.log").read()
    base_puts = [dl.count(hashlib.sha256(b).hexdigest()) for b in base]
    print(f"N={N} images, {total/1e6:.1f} MB of layers pushed (2 shared base layers of 16+8 MiB, 1 MiB own each)")
    print(f"push took {t1-t0:.2f}s; all at the target {t2-t0:.2f}s after the first push, {t2-t1:.2f}s after the last")
    print("metrics:", {k: sent[k] for k in ("blobs_sent_total","blobs_mounted_total","blobs_present_total","bytes_sent_total","manifests_sent_total","jobs_succeeded_total")})
    print("distribution log lines naming each base layer (uploads + HEADs/mounts):", base_puts)
    print("PUT upload requests naming each base layer:", [len(re.findall(r'"PUT [^"]*' + hashlib.sha256(b).hexdigest(), dl)) for b in base])
finally:
    o.terminate(); d.terminate(); o.wait(); d.wait()
    shutil.rmtree(root, ignore_errors=True)
