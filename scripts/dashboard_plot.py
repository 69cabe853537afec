#!/usr/bin/env python3
"""Renders the panels of deploy/grafana/origin.json from a real run: a release Origin (on S3
through moto when it is installed, else on the filesystem) with an async webhook, a
Prometheus scraping it every second with deploy/prometheus/alerts.yaml loaded, and a short
load (pushes, deletes that GC then reclaims, manifest and blob pulls with oha, 404s). Each
panel's own PromQL is evaluated by that Prometheus (query_range, step 1 s) and drawn with
matplotlib into docs/images/dashboard.png, laid out like the dashboard. Then prints each alert
rule's health and state.

Needs: python3-matplotlib, prometheus (Debian packages), oha (/opt/oha/bin/oha or on PATH),
optionally moto (scripts/moto.sh). Everything listens on 127.0.0.1 and is stopped by its PID.

  CARGO_TARGET_DIR=/work/target-rel cargo build --release
  python3 scripts/dashboard_plot.py --origin /work/target-rel/release/origin
"""

import argparse
import hashlib
import http.server
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOTO_PYTHON = "/opt/origin-moto/bin/python"
# Grafana's $__rate_interval for a 1 s scrape: four scrape intervals.
RATE_INTERVAL = "4s"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return  # any answer: it is up
        except OSError:
            time.sleep(0.2)
    sys.exit(f"not answering: {url}")


def request(method, url, body=b"", headers=None):
    req = urllib.request.Request(url, data=body if method in ("POST", "PUT") else None,
                                 method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver taking 10 ms per delivery (two senders: at most ~200 events/s)."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(0.01)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Load:
    """The workload, in threads: pushes with some deletes, 404s, and oha runs for pulls."""

    def __init__(self, base, oha, seconds):
        self.base, self.oha, self.seconds = base, oha, seconds
        self.stop = threading.Event()
        self.pushed = []  # (repo, tag, manifest digest, a layer digest)

    def push_image(self, repo, tag, layer_bytes):
        layers = []
        for data in [os.urandom(layer_bytes), json.dumps({"os": "linux", "t": tag}).encode()]:
            d = digest(data)
            status, _, _ = request("POST", f"{self.base}/v2/{repo}/blobs/uploads/?digest={d}", data,
                                   {"Content-Type": "application/octet-stream"})
            assert status == 201, status
            layers.append((d, len(data)))
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": layers[1][0], "size": layers[1][1]},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layers[0][0], "size": layers[0][1]}],
        }).encode()
        status, _, _ = request("PUT", f"{self.base}/v2/{repo}/manifests/{tag}", manifest,
                               {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert status == 201, status
        return digest(manifest), layers[0][0]

    def pusher(self, until):
        n = 0
        while time.time() < until and not self.stop.is_set():
            repo = f"bench/app{n % 3}"
            m, layer = self.push_image(repo, f"t{n}", random.choice([256, 1024, 4096]) << 10)
            self.pushed.append((repo, f"t{n}", m, layer))
            if n % 3 == 2:  # garbage for GC: the manifest and its layer
                request("DELETE", f"{self.base}/v2/{repo}/manifests/{m}")
            n += 1
            time.sleep(0.3)

    def misses(self, until):
        while time.time() < until and not self.stop.is_set():
            request("GET", f"{self.base}/v2/bench/none/manifests/latest")
            request("GET", f"{self.base}/v2/bench/app0/blobs/sha256:{'0' * 64}")
            time.sleep(0.5)

    def oha_run(self, url, seconds, conns, qps, headers=()):
        args = [self.oha, "-z", f"{seconds}s", "-c", str(conns), "-q", str(qps),
                "--no-tui", "--output-format", "json"]
        for h in headers:
            args += ["-H", h]
        subprocess.run(args + [url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)

    def run(self):
        t0 = time.time()
        end = t0 + self.seconds
        threads = [threading.Thread(target=self.pusher, args=(end - 10,)),
                   threading.Thread(target=self.misses, args=(end,))]
        for t in threads:
            t.start()
        while len(self.pushed) < 3:
            time.sleep(0.2)
        repo, tag, _, layer = self.pushed[0]
        accept = "Accept: application/vnd.oci.image.manifest.v1+json"
        third = max(5, self.seconds // 3)
        time.sleep(max(0.0, t0 + third - time.time()))
        self.oha_run(f"{self.base}/v2/{repo}/manifests/{tag}", third, 8, 400, [accept])
        pulls = [threading.Thread(target=self.oha_run,
                                  args=(f"{self.base}/v2/{repo}/manifests/{tag}", third - 2, 4, 100, [accept])),
                 threading.Thread(target=self.oha_run,
                                  args=(f"{self.base}/v2/{repo}/blobs/{layer}", third - 2, 2, 20))]
        for t in pulls:
            t.start()
        for t in pulls + threads:
            t.join()


def query_range(prom, expr, start, end):
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "1"})
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{params}", timeout=30) as r:
        body = json.load(r)
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def substitute(expr):
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    return re.sub(r"\$\{?(job|instance|group)\}?", ".*", expr)


def legend(fmt, labels):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt) or "value"


def formatter(unit):
    from matplotlib.ticker import FuncFormatter

    def scaled(v, suffix, base, names):
        for name in names:
            if abs(v) < base:
                return f"{v:.3g} {name}{suffix}".strip()
            v /= base
        return f"{v:.3g} {names[-1]}{suffix}"

    table = {
        "bytes": lambda v, _: scaled(v, "B", 1024, ["", "Ki", "Mi", "Gi", "Ti"]),
        "Bps": lambda v, _: scaled(v, "B/s", 1024, ["", "Ki", "Mi", "Gi"]),
        "s": lambda v, _: f"{v * 1e3:.3g} ms" if abs(v) < 1 else f"{v:.3g} s",
        "reqps": lambda v, _: f"{v:.3g}/s",
        "percentunit": lambda v, _: f"{v * 100:.3g}%",
    }
    return FuncFormatter(table.get(unit, lambda v, _: f"{v:.3g}"))


def plot(dashboard, prom, start, end, out, subtitle):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in dashboard["panels"] if p["type"] == "timeseries"]
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(18, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels):
        defaults = panel["fieldConfig"]["defaults"]
        right_units = {o["matcher"]["options"]: o["properties"][0]["value"]
                       for o in panel["fieldConfig"].get("overrides", [])}
        right = None
        drawn = 0
        for target in panel["targets"]:
            where = ax
            if target["refId"] in right_units:
                right = right or ax.twinx()
                where = right
                right.yaxis.set_major_formatter(formatter(right_units[target["refId"]]))
            for series in query_range(prom, substitute(target["expr"]), start, end):
                xs = [float(t) - start for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                style = "--" if where is right else "-"
                where.plot(xs, ys, style, linewidth=1.2,
                           label=legend(target["legendFormat"], series["metric"]))
                drawn += 1
        ax.set_title(panel["title"], fontsize=10, loc="left")
        ax.yaxis.set_major_formatter(formatter(defaults.get("unit")))
        ax.set_xlim(0, end - start)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if right is not None:
            right.set_ylim(bottom=0)
            right.tick_params(labelsize=8)
        if drawn == 0:
            ax.text(0.5, 0.5, "no data in this run", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
        handles, labels = ax.get_legend_handles_labels()
        if right is not None:
            h2, l2 = right.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        if handles:
            ax.legend(handles[:10], labels[:10], fontsize=7, loc="upper left", ncol=2)
    for ax in axes[-1]:
        ax.set_xlabel("seconds into the run", fontsize=8)
    fig.suptitle(f"Origin dashboard panels (deploy/grafana/origin.json), {subtitle}", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=72)
    print(f"wrote {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--origin", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "origin"))
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    ap.add_argument("--oha", default=shutil.which("oha") or "/opt/oha/bin/oha")
    ap.add_argument("--seconds", type=int, default=75, help="length of the load")
    ap.add_argument("--storage", choices=["auto", "fs", "s3"], default="auto")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "images", "dashboard.png"))
    args = ap.parse_args()
    s3 = args.storage == "s3" or (args.storage == "auto" and os.path.exists(MOTO_PYTHON))

    work = tempfile.mkdtemp(prefix="origin-dash.")
    procs = []

    def spawn(cmd, name):
        log = open(os.path.join(work, f"{name}.log"), "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        procs.append(p)
        return p

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        storage = f'[storage.fs]\nroot_dir = "{work}/data"\n'
        if s3:
            moto_port = free_port()
            spawn([MOTO_PYTHON, os.path.join(ROOT, "scripts", "moto_serial.py"),
                   "-H", "127.0.0.1", "-p", str(moto_port)], "moto")
            wait_http(f"http://127.0.0.1:{moto_port}/")
            assert request("PUT", f"http://127.0.0.1:{moto_port}/registry")[0] == 200
            storage = (f'[storage.s3]\nbucket = "registry"\nendpoint = "http://127.0.0.1:{moto_port}"\n'
                       'path_style = true\naccess_key_id = "dash"\nsecret_access_key = "dash-secret"\n'
                       f"multipart_part_size = {5 << 20}\n")
        port = free_port()
        config = f"""[server]
bind_address = "127.0.0.1"
port = {port}
workers = 2

[log]
filter = "warn"

{storage}
[gc]
interval = "5s"
grace_period = "0s"
remove_untagged = true

[[repository]]
namespace = ""
policy_default_allow = true
policies = []
event_webhooks = ["audit"]

[event_webhook.audit]
url = "http://127.0.0.1:{receiver.server_address[1]}/hook"
events = ["manifest.push", "manifest.pull", "manifest.delete"]
delivery = "async"
timeout = "2s"
max_retries = 0
"""
        with open(os.path.join(work, "origin.toml"), "w") as f:
            f.write(config)
        spawn([args.origin, "serve", "-c", os.path.join(work, "origin.toml")], "origin")
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/v2/")

        prom_port = free_port()
        shutil.copy(os.path.join(ROOT, "deploy", "prometheus", "alerts.yaml"), work)
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [alerts.yaml]
scrape_configs:
  - job_name: origin
    static_configs: [{{targets: ["127.0.0.1:{port}"]}}]
""")
        spawn([args.prometheus, f"--config.file={work}/prometheus.yml",
               f"--storage.tsdb.path={work}/tsdb", f"--web.listen-address=127.0.0.1:{prom_port}"],
              "prometheus")
        prom = f"http://127.0.0.1:{prom_port}"
        wait_http(f"{prom}/-/ready")

        # A readiness probe, like a Kubernetes one, every 5 s (the series is set by /readyz).
        stop = threading.Event()

        def probe():
            while not stop.wait(5):
                request("GET", f"{base}/readyz")
        request("GET", f"{base}/readyz")
        threading.Thread(target=probe, daemon=True).start()

        time.sleep(5)
        start = time.time()
        Load(base, args.oha, args.seconds).run()
        time.sleep(10)  # the tail: queue draining, the last GC passes
        end = time.time()
        stop.set()

        dashboard = json.load(open(os.path.join(ROOT, "deploy", "grafana", "origin.json")))
        backend = "S3 (moto)" if s3 else "filesystem"
        plot(dashboard, prom, start, end, args.out,
             f"{args.seconds} s of load on a release build, storage on {backend}, "
             "queried from Prometheus (1 s scrapes)")
        with urllib.request.urlopen(f"{prom}/api/v1/rules", timeout=10) as r:
            for group in json.load(r)["data"]["groups"]:
                for rule in group["rules"]:
                    print(f"rule {rule['name']}: health {rule['health']}, state {rule['state']}"
                          + (f" ({rule['lastError']})" if rule.get("lastError") else ""))
    finally:
        receiver.shutdown()
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
