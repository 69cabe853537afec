#!/usr/bin/env python3
"""Record what registry clients send: an HTTP/1.1 relay that logs every request and
response head (bodies are passed through, only their framing is logged).

Debugging aid for scripts/interop.sh, not used by CI. Put it in front of a registry and
point the script at it:

    scripts/interop/trace-proxy.py 127.0.0.1:35002 127.0.0.1:5000 /tmp/trace.jsonl &
    INTEROP_TARGET=external INTEROP_REGISTRY=127.0.0.1:35002 scripts/interop.sh
    scripts/interop/trace-proxy.py --summary /tmp/trace.jsonl

One JSON object a line: {"conn", "t", "req", "hdrs", "body", "interim", "resp", "rhdrs",
"rbody"}; a connection whose first byte cannot start a request (a TLS ClientHello from a
client probing https first) is logged as {"conn", "t", "non_http": "<hex byte>"} and closed
at once, as a plain-HTTP registry should. Header lists keep repeated fields (Go clients
send one Accept line per media type). Expect: 100-continue is relayed (the upstream's
100 goes back before the body is read). The Host header is passed unchanged, so absolute
Location URLs point back at the relay.
"""
import asyncio
import collections
import json
import re
import sys
import time

conn_ids = 0


def parse_head(raw):
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers.append((name, value.strip()))
    return lines[0], headers


def header(headers, name):
    values = [v for k, v in headers if k.lower() == name]
    return values[-1] if values else None


async def relay_body(reader, writer, headers, no_body=False):
    """Copies one message body per its framing; returns a description of the framing."""
    if no_body:
        return "none"
    te = header(headers, "transfer-encoding")
    if te and "chunked" in te.lower():
        chunks = total = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            writer.write(line)
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = await reader.readuntil(b"\r\n")
                    writer.write(trailer)
                    if trailer == b"\r\n":
                        break
                break
            writer.write(await reader.readexactly(size + 2))
            chunks += 1
            total += size
        return f"chunked: {chunks} chunks, {total} bytes"
    length = header(headers, "content-length")
    if length is not None:
        left = int(length)
        while left > 0:
            data = await reader.read(min(left, 1 << 16))
            if not data:
                raise EOFError("body cut short")
            writer.write(data)
            left -= len(data)
        return f"length {length}"
    return "none"


async def handle(client_r, client_w, upstream, log):
    global conn_ids
    conn_ids += 1
    conn = conn_ids
    host, port = upstream.rsplit(":", 1)
    up_r, up_w = await asyncio.open_connection(host, int(port))
    try:
        while True:
            try:
                first = await client_r.readexactly(1)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            if not b"A" <= first <= b"Z":
                log({"conn": conn, "t": time.time(), "non_http": first.hex()})
                break
            head = first + await client_r.readuntil(b"\r\n\r\n")
            line, hdrs = parse_head(head)
            up_w.write(head)
            await up_w.drain()
            interim = []

            async def response_head():
                raw = await up_r.readuntil(b"\r\n\r\n")
                client_w.write(raw)
                await client_w.drain()
                return parse_head(raw)

            rline, rhdrs = None, None
            if (header(hdrs, "expect") or "").lower() == "100-continue":
                rline, rhdrs = await response_head()
                if int(rline.split()[1]) < 200:
                    interim.append(rline)
                    rline = None
            body = "not sent (final answer first)" if rline else await relay_body(client_r, up_w, hdrs)
            await up_w.drain()
            while rline is None:
                rline, rhdrs = await response_head()
                if int(rline.split()[1]) < 200:
                    interim.append(rline)
                    rline = None
            method = line.split()[0]
            status = int(rline.split()[1])
            rbody = await relay_body(up_r, client_w, rhdrs, no_body=method == "HEAD" or status in (204, 304))
            await client_w.drain()
            log({"conn": conn, "t": time.time(), "req": line, "hdrs": hdrs, "body": body,
                 "interim": interim, "resp": rline, "rhdrs": rhdrs, "rbody": rbody})
    except Exception as e:  # a broken exchange ends the connection; note why
        log({"conn": conn, "t": time.time(), "error": repr(e)})
    finally:
        client_w.close()
        up_w.close()


async def serve(listen, upstream, path):
    out = open(path, "a", buffering=1)

    def log(obj):
        out.write(json.dumps(obj) + "\n")

    host, port = listen.rsplit(":", 1)
    server = await asyncio.start_server(lambda r, w: handle(r, w, upstream, log), host, int(port))
    async with server:
        await server.serve_forever()


def summary(path):
    """Request shapes per client: method, route, header names, framing, Accept values."""
    shapes = collections.Counter()
    accepts = collections.Counter()
    non_http = collections.Counter()
    for line in open(path):
        r = json.loads(line)
        if "non_http" in r:
            non_http[r["non_http"]] += 1
        if "req" not in r:
            continue
        agent = (header(r["hdrs"], "user-agent") or "?").split()[0]
        method, target = r["req"].split()[:2]
        route = re.sub(r"sha256(:|%3A)[0-9a-f]{64}", "<digest>", target)
        route = re.sub(r"uploads/[^?]+", "uploads/<id>", route)
        route = re.sub(r"_state=[^&]*", "_state=..", route)
        route = re.sub(r"^/v2/(.+?)/(manifests|blobs|tags|referrers)/", r"/v2/<name>/\2/", route)
        route = re.sub(r"from=[^&]*", "from=<repo>", route)
        names = ",".join(sorted({k.lower() for k, _ in r["hdrs"]} - {"host", "user-agent"}))
        framing = r["body"].split(":")[0].split(" ")[0]
        shapes[(agent, method, route, names, framing, r["resp"].split(" ", 1)[1])] += 1
        accept = " | ".join(v for k, v in r["hdrs"] if k.lower() == "accept")
        if "/manifests/" in target and accept:
            accepts[(agent, method, accept)] += 1
    for key, n in shapes.items():
        print(f"{n:4} {'  '.join(key)}")
    print("\nAccept on manifest requests:")
    for key, n in accepts.items():
        print(f"{n:4} {'  '.join(key)}")
    if non_http:
        print("\nconnections opened with a non-HTTP byte (TLS probes):", dict(non_http))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--summary":
        summary(sys.argv[2])
    elif len(sys.argv) == 4:
        asyncio.run(serve(sys.argv[1], sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
