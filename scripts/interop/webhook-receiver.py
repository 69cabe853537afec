#!/usr/bin/env python3
"""Event webhook receiver for scripts/interop.sh: answers every POST on 127.0.0.1:PORT with
204 and appends one JSON line per request to FILE: {"headers": {...}, "body": "<text>"}.

    webhook-receiver.py PORT FILE
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        line = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace")}
        with open(sys.argv[2], "a") as f:
            f.write(json.dumps(line) + "\n")
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
