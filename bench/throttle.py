#!/usr/bin/env python3
"""A TCP proxy that limits each connection's download (server to client) to a rate, as a
WAN link to a remote registry would. Listens on 127.0.0.1:PORT, forwards to --to.

  bench/throttle.py --listen 0 --to 127.0.0.1:5001 --mib-s 200   # prints the port, then serves
"""

import argparse
import socket
import sys
import threading
import time

CHUNK = 256 * 1024


def pipe(src, dst, rate):
    sent = 0
    t0 = time.perf_counter()
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                break
            dst.sendall(data)
            if rate:
                sent += len(data)
                ahead = sent / rate - (time.perf_counter() - t0)
                if ahead > 0:
                    time.sleep(ahead)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, default=0)
    ap.add_argument("--to", required=True)
    ap.add_argument("--mib-s", type=float, required=True)
    args = ap.parse_args()
    host, port = args.to.rsplit(":", 1)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", args.listen))
    ls.listen(64)
    print(ls.getsockname()[1], flush=True)
    rate = args.mib_s * (1 << 20)
    while True:
        c, _ = ls.accept()
        try:
            u = socket.create_connection((host, int(port)))
        except OSError:
            c.close()
            continue
        threading.Thread(target=pipe, args=(c, u, 0), daemon=True).start()
        threading.Thread(target=pipe, args=(u, c, rate), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
