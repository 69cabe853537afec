#!/usr/bin/env python3
"""A webhook receiver for bench/webhooks.sh: answers every POST with 204 on 127.0.0.1:PORT
and counts what it got (printed on SIGTERM to the file given as the second argument)."""
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNT = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global COUNT
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        COUNT += 1
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)

    def stop(*_):
        with open(out, "w") as f:
            f.write(f"{COUNT}\n")
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
