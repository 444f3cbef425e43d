#!/usr/bin/env python3
"""Idle keep-alive connections for the memory benchmark (benches/load/run.sh, test
`idle`): open N connections to a proxy, send one request on each and read its
whole response, then hold them all open, idle, until SIGTERM or SIGINT.

    idle.py --port 8080 --connections 10000 [--proto h1|h2c|h2] [--tls]

`h2c` is HTTP/2 by prior knowledge; `h2` is HTTP/2 over TLS (ALPN `h2`, implies
`--tls`); `--tls` alone is HTTP/1.1 over TLS (ALPN `http/1.1`).

Prints `ready N` on stdout once every connection has had its response, so the
caller can read the proxy's RSS; a connection that fails or gets no 200 makes it
exit 1 with the reason (a benchmark that silently held fewer connections would
report a wrong per-connection cost).
"""

import argparse
import functools
import signal
import socket
import ssl
import struct
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS = 0x0, 0x1, 0x4
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed by the proxy")
        out += chunk
    return out


def h1_exchange(sock, host):
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if lines[0].split()[1] != "200":
        raise ConnectionError(f"answered `{lines[0]}`")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is None:
        raise ConnectionError("response without content-length")
    if length > len(rest):
        read_exact(sock, length - len(rest))


def h2_exchange(sock, host, https=False):
    # HPACK: :method GET (static 2), :scheme http (6) or https (7), :path / (4),
    # then :authority (static name 1) as a literal with incremental indexing.
    scheme = b"\x87" if https else b"\x86"
    block = b"\x82" + scheme + b"\x84\x41" + bytes([len(host)]) + host.encode()
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_STREAM | END_HEADERS, 1, block))
    status_seen = False
    while True:
        head = read_exact(sock, 9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = read_exact(sock, length)
        if kind == SETTINGS and not flags & ACK:
            sock.sendall(frame(SETTINGS, ACK, 0))
        if stream != 1:
            continue
        if kind == HEADERS and not status_seen:
            # :status 200 is static index 8 (0x88) in every proxy's encoding here.
            if not payload or payload[0] != 0x88:
                raise ConnectionError(f"response headers {payload[:8].hex()} are not :status 200")
            status_seen = True
        if kind in (HEADERS, DATA) and flags & END_STREAM:
            return


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--proto", choices=["h1", "h2c", "h2"], default="h1",
                   help="h2c: HTTP/2 by prior knowledge; h2: HTTP/2 over TLS")
    p.add_argument("--tls", action="store_true", help="TLS without verification (h1 or h2)")
    a = p.parse_args()
    if a.proto == "h2c" and a.tls:
        p.error("h2c is cleartext; HTTP/2 over TLS is --proto h2")
    tls = alpn = None
    if a.tls or a.proto == "h2":
        alpn = "h2" if a.proto == "h2" else "http/1.1"
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        tls.set_alpn_protocols([alpn])
    if a.proto == "h1":
        exchange = h1_exchange
    else:
        exchange = functools.partial(h2_exchange, https=tls is not None)
    host = f"127.0.0.1:{a.port}"
    held = []
    for i in range(a.connections):
        try:
            s = socket.create_connection(("127.0.0.1", a.port), timeout=30)
            if tls is not None:
                s = tls.wrap_socket(s)
                if s.selected_alpn_protocol() != alpn:
                    raise ConnectionError(f"ALPN chose {s.selected_alpn_protocol()}, not {alpn}")
            exchange(s, host)
        except (OSError, ValueError, IndexError) as e:
            print(f"connection {i + 1}: {e}", file=sys.stderr)
            sys.exit(1)
        held.append(s)
    print(f"ready {len(held)}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
