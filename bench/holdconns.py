#!/usr/bin/env python3
"""Open N keep-alive connections to 127.0.0.1:PORT, send one complete request on
each, read its response, then hold them all open (idle) until HOLD seconds pass
or SIGTERM/SIGINT arrives.

usage: holdconns.py PORT [N=128] [PATH=/14b.txt] [HOLD=60]

PATH "-" sends nothing: the connections are held open before any request (for a
server that closes after one response, this still shows what a live worker costs).

Prints one line once every response has been read (or has failed):
  READY opened=N answered=A open=K
where `open` counts the connections the server had not closed at that point.
Loopback only: the address is always 127.0.0.1."""

import signal
import socket
import sys
import time


def read_response(s, deadline):
    """Read one response (head + Content-Length body). Returns (ok, still_open)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = s.recv(65536)
        if not chunk:
            return False, False
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1."):
        return False, True
    length = 0
    closes = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection" and b"close" in value.lower():
            closes = True
    while len(body) < length:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = s.recv(65536)
        if not chunk:
            return False, False
        body += chunk
    return True, not closes


def still_open(s):
    """True when the peer has not closed (no EOF/RST pending)."""
    s.setblocking(False)
    try:
        data = s.recv(1, socket.MSG_PEEK)
        return len(data) > 0
    except BlockingIOError:
        return True
    except OSError:
        return False


def main():
    port = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    path = sys.argv[3] if len(sys.argv) > 3 else "/14b.txt"
    hold = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (path, port)).encode()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if path != "-":
            s.sendall(req)
        socks.append(s)
    deadline = time.monotonic() + 10
    answered = 0
    for s in socks if path != "-" else []:
        try:
            ok, _ = read_response(s, deadline)
            answered += ok
        except (OSError, ValueError):
            pass
    time.sleep(0.2)  # let a server that closes after one response do so
    alive = sum(still_open(s) for s in socks)
    print("READY opened=%d answered=%d open=%d" % (len(socks), answered, alive), flush=True)

    end = time.monotonic() + hold
    while not stop and time.monotonic() < end:
        time.sleep(0.1)
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
