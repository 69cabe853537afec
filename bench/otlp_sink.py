#!/usr/bin/env python3
"""A minimal OTLP/HTTP trace receiver for bench/tracing.sh: accepts POST /v1/traces (any
body), answers 200 with an empty ExportTraceServiceResponse, keeps connections alive, and
counts requests and bytes (printed as JSON on SIGTERM/SIGINT to --stats). Python 3 stdlib
only; it never decodes, so its own cost stays small beside the registry's.

With --tree it decodes instead (needs the `opentelemetry-proto` package from PyPI) and
prints each trace as a tree of spans with their durations, to find where a request's time
went without a tracing backend:

  bench/otlp_sink.py --port 4318 --stats /tmp/sink.json
  python3 -m venv /tmp/otel && /tmp/otel/bin/pip install opentelemetry-proto
  /tmp/otel/bin/python bench/otlp_sink.py --port 4318 --stats /tmp/sink.json --tree
"""

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.dont_write_bytecode = True
COUNTS = {"requests": 0, "bytes": 0}
TREE = False


def print_tree(body):
    """Prints the spans of one export, grouped by trace, children under their parents."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    req = trace_service_pb2.ExportTraceServiceRequest()
    req.ParseFromString(body)
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    by_trace = {}
    for s in spans:
        by_trace.setdefault(s.trace_id.hex(), []).append(s)
    for trace_id, group in by_trace.items():
        ids = {s.span_id for s in group}
        children = {}
        for s in group:
            parent = s.parent_span_id if s.parent_span_id in ids else b""
            children.setdefault(parent, []).append(s)

        def show(s, depth):
            ms = (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6
            attrs = {a.key: a.value.string_value or a.value.int_value for a in s.attributes}
            keep = {k: v for k, v in attrs.items()
                    if k in ("http.response.status_code", "key", "prefix", "s3.operation",
                             "oci.repository", "enduser.id", "pool.wait_us", "argon2.verify_us")}
            events = "".join(f" [{e.name}]" for e in s.events)
            print(f"{'  ' * depth}{s.name}  {ms:.3f} ms  {keep if keep else ''}{events}")
            for c in sorted(children.get(s.span_id, []), key=lambda c: c.start_time_unix_nano):
                show(c, depth + 1)

        print(f"trace {trace_id}")
        for root in sorted(children.get(b"", []), key=lambda c: c.start_time_unix_nano):
            show(root, 1)
    sys.stdout.flush()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        COUNTS["requests"] += 1
        COUNTS["bytes"] += len(body)
        if TREE:
            print_tree(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--tree", action="store_true", help="decode and print each trace")
    args = ap.parse_args()
    global TREE
    TREE = args.tree
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Sink)

    def stop(*_):
        with open(args.stats, "w") as f:
            json.dump(COUNTS, f)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
