#!/usr/bin/env python3
"""Hostile clients for bench/hostile: one process, non-blocking sockets, loopback only.

usage: attack.py MODE --port PORT [--slots N] [--duration S] [--hold S]
                 [--sources FIRST-LAST] [--interval S]

The target is always 127.0.0.1:PORT. Every connection binds first to a source
address in 127.0.0.0/8 (round-robin over --sources, default 127.0.1.1-127.0.1.250),
so the attack looks like it comes from many hosts.

Attack modes run until --duration seconds pass or SIGTERM/SIGINT arrives, keep one
connection per slot and reopen a slot whose connection was closed (or failed) at
most once a second per slot (a connect still pending after --connect-timeout, 10 s,
is given up and counted in connect_timeouts):
  slowloris  send "GET /?N HTTP/1.1", "Host: x", then one "X-a-K: b" line every
             --interval (5) seconds, never the blank line that ends the head
  slowbody   send a complete POST head (to --path, default /14b.txt) with
             Content-Length: 100000, then one body byte every --interval (1)
             seconds; whatever the server sends is read and discarded
  keepalive  valid keep-alive clients: each keeps one connection, sends
             "GET /14b.txt" on it every --interval (4) seconds (staggered start) and
             reads the whole response. When the server closes the connection, the
             next request opens a new one; a request in flight is sent again on a new
             connection, at once if the closed one had been answered before (the
             usual keep-alive race), else a second after the last connect. A failure
             is a connect error, a request (counted from when it was due) with no
             complete response within --deadline (8) seconds, or a non-2xx response.
             clients_late counts the clients whose longest gap between two answers
             (or from their start to the first answer, or from the last answer to
             the end) exceeded --deadline.
  idle       connect and send nothing
  download   send "GET /big HTTP/1.1" (Connection: close; --path) and read the answer at
             --rate (600) bytes a second, just above lbaws's default
             min_send_rate, on a small receive buffer: a large download that
             holds its server slot for as long as it lasts. When the server
             closes (the download done, or refused), the slot reopens.
             ok counts 2xx answers begun, refused the others (503...).
At the end each prints one line of key=value pairs on stdout, starting "attack=MODE".

Hold modes open --slots connections once (no reopening) and print
  READY opened=N established=E ... open=K
once they are all established (hold-keepalive: once every response has been read),
or once nothing has progressed for 3 s, or after 30 s; then they hold everything
open until --hold seconds pass or SIGTERM/SIGINT arrives:
  hold-halfhead   each connection sends half a request head and stops
  hold-keepalive  each connection sends one GET, reads the response, then stays idle
"""

import argparse
import errno
import heapq
import ipaddress
import random
import resource
import selectors
import signal
import socket
import sys
import time

TARGET = "127.0.0.1"  # never anything else
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

MODES = ("slowloris", "slowbody", "keepalive", "idle", "download", "hold-halfhead",
         "hold-keepalive")
DEFAULT_INTERVAL = {"slowloris": 5.0, "slowbody": 1.0, "keepalive": 4.0, "download": 0.5}
DOWNLOAD_REQUEST = b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
DOWNLOAD_RCVBUF = 4096
KEEPALIVE_REQUEST = b"GET /14b.txt HTTP/1.1\r\nHost: x\r\n\r\n"
SLOWBODY_HEAD = (b"POST %s HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n")
BODY_LENGTH = 100000


def parse_sources(spec):
    """'127.0.1.1-127.0.1.250' or a single address -> list of 127/8 addresses."""
    first, _, last = spec.partition("-")
    a = ipaddress.ip_address(first.strip())
    b = ipaddress.ip_address((last or first).strip())
    if a not in LOOPBACK or b not in LOOPBACK or int(b) < int(a):
        raise argparse.ArgumentTypeError("sources must be a range inside 127.0.0.0/8: %r" % spec)
    if int(b) - int(a) >= 65536:
        raise argparse.ArgumentTypeError("at most 65536 source addresses")
    return [str(ipaddress.ip_address(i)) for i in range(int(a), int(b) + 1)]


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Response:
    """Incremental parser for one HTTP/1.x response (Content-Length, chunked or
    until close). feed() returns None while incomplete, else (status, closes, rest)."""

    def __init__(self):
        self.buf = b""
        self.head = None

    def feed(self, data):
        self.buf += data
        if self.head is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    raise ValueError("response head too long")
                return None
            lines = self.buf[:end].split(b"\r\n")
            self.buf = self.buf[end + 4:]
            parts = lines[0].split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise ValueError("bad status line")
            self.status = int(parts[1])
            self.length = None
            self.chunked = False
            self.closes = parts[0] == b"HTTP/1.0"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                value = value.strip().lower()
                if name == b"content-length":
                    self.length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value:
                    self.chunked = True
                elif name == b"connection":
                    if b"close" in value:
                        self.closes = True
                    elif b"keep-alive" in value:
                        self.closes = False
            self.head = True
            if self.status in (204, 304) or 100 <= self.status < 200:
                self.length = 0
        if self.chunked:
            return self._chunked()
        if self.length is None:
            return None  # delimited by the close: see eof()
        if len(self.buf) >= self.length:
            rest = self.buf[self.length:]
            return self.status, self.closes, rest
        return None

    def _chunked(self):
        pos = 0
        while True:
            eol = self.buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(self.buf[pos:eol].split(b";")[0], 16)
            if size == 0:
                # trailers end with an empty line
                end = self.buf.find(b"\r\n\r\n", eol)
                if self.buf[eol:eol + 4] == b"\r\n\r\n":
                    end = eol
                if end < 0:
                    return None
                return self.status, self.closes, self.buf[end + 4:]
            if len(self.buf) < eol + 2 + size + 2:
                return None
            pos = eol + 2 + size + 2

    def eof(self):
        """The server closed: a close-delimited body is complete now."""
        if self.head is not None and not self.chunked and self.length is None:
            return self.status, True, b""
        return None


class Slot:
    __slots__ = ("idx", "source", "sock", "gen", "connected", "opened_at", "last_attempt",
                 "sent_lines", "body_sent", "start", "req_first_sent", "req_due", "pending",
                 "resp", "last_answer", "max_gap", "answered", "conn_answers", "closed")

    def __init__(self, idx, source):
        self.idx = idx
        self.source = source
        self.sock = None
        self.gen = 0
        self.connected = False
        self.opened_at = 0.0
        self.last_attempt = -1e9
        self.sent_lines = 0
        self.body_sent = 0
        # keep-alive clients
        self.start = 0.0
        self.req_first_sent = None   # first send of the request in flight (None: none)
        self.req_due = 0.0           # when the next request is due
        self.pending = False         # a request must be (re)sent on the next connection
        self.resp = None
        self.last_answer = None
        self.max_gap = 0.0
        self.answered = 0
        self.conn_answers = 0        # responses on the current connection
        self.closed = False          # hold modes: the server closed it


class Attack:
    def __init__(self, args):
        self.a = args
        self.mode = args.mode
        self.hold_mode = self.mode.startswith("hold-")
        self.interval = args.interval if args.interval is not None else DEFAULT_INTERVAL.get(self.mode, 1.0)
        self.sel = selectors.DefaultSelector()
        self.timers = []  # (when, seq, slot index, gen, kind)
        self.seq = 0
        self.stop = False
        self.c = dict(attempts=0, opened=0, closed_by_server=0, reopened=0, connect_errors=0,
                      connect_timeouts=0, bytes_sent=0, bytes_received=0, send_errors=0)
        if self.mode == "keepalive":
            self.c.update(sent=0, answered=0, non2xx=0, request_timeouts=0, resent=0)
        elif self.mode == "hold-keepalive":
            self.c.update(answered=0)
        elif self.mode == "download":
            self.c.update(ok=0, refused=0)
        self.slots = [Slot(i, args.sources[i % len(args.sources)]) for i in range(args.slots)]
        self.lat = []

    # ------------------------------------------------------------ timers
    def at(self, when, slot, kind):
        self.seq += 1
        heapq.heappush(self.timers, (when, self.seq, slot.idx, slot.gen, kind))

    # ------------------------------------------------------------ sockets
    def open(self, slot, now):
        """Start a non-blocking connect for slot (from its source address)."""
        slot.gen += 1
        slot.connected = False
        slot.resp = None
        slot.sent_lines = 0
        slot.body_sent = 0
        if slot.last_attempt > -1e8:
            self.c["reopened"] += 1
        slot.last_attempt = now
        self.c["attempts"] += 1
        s = None
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            if self.mode == "download":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, DOWNLOAD_RCVBUF)
            s.bind((slot.source, 0))
            err = s.connect_ex((TARGET, self.a.port))
        except OSError as e:
            if s is not None:
                s.close()
            self.connect_failed(slot, now, e.errno)
            return
        if err not in (0, errno.EINPROGRESS):
            s.close()
            self.connect_failed(slot, now, err)
            return
        slot.sock = s
        self.sel.register(s, selectors.EVENT_WRITE, slot)
        if err == 0:
            self.established(slot, now)
        elif self.a.connect_timeout > 0 and not self.hold_mode:
            self.at(now + self.a.connect_timeout, slot, "connect-timeout")

    def drop(self, slot):
        if slot.sock is not None:
            try:
                self.sel.unregister(slot.sock)
            except (KeyError, ValueError):
                pass
            slot.sock.close()
            slot.sock = None
        slot.connected = False
        slot.gen += 1  # cancels this connection's timers

    def connect_failed(self, slot, now, err):
        self.c["connect_errors"] += 1
        self.drop(slot)
        if self.hold_mode:
            slot.closed = True
        elif self.mode != "keepalive" or slot.req_first_sent is not None:
            self.schedule_reopen(slot, now)

    def schedule_reopen(self, slot, now):
        # at most one connect per second per slot
        self.at(max(now, slot.last_attempt + 1.0), slot, "open")

    def closed_by_server(self, slot, now):
        self.c["closed_by_server"] += 1
        was_connected = slot.connected
        self.drop(slot)
        if self.hold_mode:
            slot.closed = True
            return
        if self.mode == "keepalive":
            # An idle connection closed by the server is reopened when the next
            # request is due. A request in flight is sent again on a new connection:
            # at once if this connection had been answered before (the usual
            # keep-alive race), else (refused on a fresh connection) once the
            # slot's last connect is a second old.
            if slot.req_first_sent is not None:
                slot.pending = True
                self.c["resent"] += 1
                reused = was_connected and slot.conn_answers > 0
                self.at(now if reused else max(now, slot.last_attempt + 1.0), slot, "open")
        else:
            self.schedule_reopen(slot, now)

    def established(self, slot, now):
        slot.connected = True
        slot.conn_answers = 0
        slot.opened_at = now
        self.c["opened"] += 1
        self.sel.modify(slot.sock, selectors.EVENT_READ, slot)
        m = self.mode
        if m in ("slowloris", "hold-halfhead"):
            self.send(slot, b"GET /?%d HTTP/1.1\r\nHost: x\r\n" % random.randrange(1 << 30))
            if m == "slowloris":
                self.at(now + self.interval, slot, "tick")
        elif m == "slowbody":
            self.send(slot, SLOWBODY_HEAD % (self.a.path or "/14b.txt").encode())
            self.at(now + self.interval, slot, "tick")
        elif m == "keepalive":
            if slot.pending:
                self.transmit(slot)
        elif m == "hold-keepalive":
            slot.resp = Response()
            self.send(slot, KEEPALIVE_REQUEST)
        elif m == "download":
            # Read on the clock only (download_tick), never as fast as it comes.
            self.sel.unregister(slot.sock)
            slot.sent_lines = 0  # bytes read so far on this connection
            self.send(slot, DOWNLOAD_REQUEST % (self.a.path or "/big").encode())
            self.at(now + self.interval, slot, "tick")

    def download_tick(self, slot, now):
        """Read this tick's share of the answer (--rate bytes a second)."""
        want = max(1, int(self.a.rate * self.interval))
        got = 0
        while got < want:
            try:
                data = slot.sock.recv(want - got)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.closed_by_server(slot, now)
                return
            if slot.sent_lines == 0:
                ok = data.startswith(b"HTTP/1.1 2")
                self.c["ok" if ok else "refused"] += 1
            slot.sent_lines += len(data)
            got += len(data)
            self.c["bytes_received"] += len(data)
        self.at(now + self.interval, slot, "tick")

    def send(self, slot, data):
        try:
            n = slot.sock.send(data)
            self.c["bytes_sent"] += n
            return n == len(data)
        except BlockingIOError:
            self.c["send_errors"] += 1
            return False
        except OSError:
            self.c["send_errors"] += 1
            return False

    # ------------------------------------------------------------ keep-alive clients
    def send_request(self, slot, now):
        """A request is due: it counts from now, whether or not a connection is ready."""
        slot.req_first_sent = now
        self.c["sent"] += 1
        self.at(now + self.a.deadline, slot, "deadline")
        slot.pending = True
        if slot.connected:
            self.transmit(slot)
        elif slot.sock is None:
            self.open(slot, now)

    def transmit(self, slot):
        slot.pending = False
        slot.resp = Response()
        self.send(slot, KEEPALIVE_REQUEST)

    def answer(self, slot, now, status):
        first = slot.req_first_sent
        slot.req_first_sent = None
        slot.resp = None
        if 200 <= status < 300:
            self.c["answered"] += 1
            self.lat.append(now - first)
            gap = now - (slot.last_answer if slot.last_answer is not None else slot.start)
            slot.max_gap = max(slot.max_gap, gap)
            slot.last_answer = now
            slot.answered += 1
        else:
            self.c["non2xx"] += 1
        slot.req_due = max(now, slot.req_due + self.interval)
        self.at(slot.req_due, slot, "request")

    def keepalive_timer(self, slot, now, kind):
        if slot.req_first_sent is not None and kind == "request":
            return  # one request in flight at a time
        if kind == "request":
            self.send_request(slot, now)
        elif kind == "deadline":
            if slot.req_first_sent is None or slot.req_first_sent + self.a.deadline > now + 1e-3:
                return  # answered; this timer belonged to an earlier request
            # no complete answer within the deadline: a failure; start over at once
            self.c["request_timeouts"] += 1
            slot.req_first_sent = None
            slot.pending = False
            self.drop(slot)
            slot.req_due = now
            self.send_request(slot, now)

    # ------------------------------------------------------------ events
    def on_event(self, slot, mask, now):
        if not slot.connected:
            err = slot.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.connect_failed(slot, now, err)
            else:
                self.established(slot, now)
            return
        try:
            data = slot.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if slot.resp is not None:
                done = slot.resp.eof()
                if done is not None:
                    self.response_done(slot, now, done)
                    if slot.sock is None:
                        return
            self.closed_by_server(slot, now)
            return
        self.c["bytes_received"] += len(data)
        if slot.resp is None:
            return  # read and discard
        try:
            done = slot.resp.feed(data)
        except ValueError:
            self.closed_by_server(slot, now)
            return
        if done is not None:
            self.response_done(slot, now, done)

    def response_done(self, slot, now, done):
        status, closes, _rest = done
        if self.mode == "keepalive":
            slot.conn_answers += 1
            self.answer(slot, now, status)
            if closes and slot.sock is not None:
                self.drop(slot)  # reopened when the next request is due
        elif self.mode == "hold-keepalive":
            slot.resp = None
            slot.answered += 1
            self.c["answered"] += 1
            self.last_progress = now
            if closes:
                self.drop(slot)
                slot.closed = True

    def timer(self, slot, gen, kind, now):
        if kind == "open":
            if slot.sock is None:
                self.open(slot, now)
            return
        if kind in ("request", "deadline"):
            # these outlive reconnects: keepalive_timer checks them against the request
            self.keepalive_timer(slot, now, kind)
            return
        if gen != slot.gen:
            return
        if kind == "connect-timeout":
            if not slot.connected:
                self.c["connect_timeouts"] += 1
                self.drop(slot)
                self.schedule_reopen(slot, now)
        elif kind == "tick" and slot.connected:
            if self.mode == "download":
                self.download_tick(slot, now)
                return
            if self.mode == "slowloris":
                slot.sent_lines += 1
                self.send(slot, b"X-a-%d: b\r\n" % slot.sent_lines)
            elif self.mode == "slowbody" and slot.body_sent < BODY_LENGTH:
                slot.body_sent += 1
                self.send(slot, b"a")
            self.at(now + self.interval, slot, "tick")

    # ------------------------------------------------------------ main loops
    def run_attack(self):
        t0 = time.monotonic()
        self.t0 = t0
        end = t0 + self.a.duration
        n = len(self.slots)
        for slot in self.slots:
            if self.mode == "keepalive":
                slot.start = t0 + self.interval * slot.idx / n
                slot.req_due = slot.start
                self.at(slot.start, slot, "request")
            else:
                self.at(t0, slot, "open")
        self.loop(lambda now: now >= end)
        self.t_end = time.monotonic()

    def loop(self, finished):
        while not self.stop:
            now = time.monotonic()
            if finished(now):
                break
            while self.timers and self.timers[0][0] <= now:
                when, _, idx, gen, kind = heapq.heappop(self.timers)
                self.timer(self.slots[idx], gen, kind, now)
            timeout = 0.1
            if self.timers:
                timeout = min(timeout, max(0.0, self.timers[0][0] - time.monotonic()))
            for key, mask in self.sel.select(timeout):
                slot = key.data
                if slot.sock is not None and key.fileobj is slot.sock:
                    self.on_event(slot, mask, time.monotonic())

    def run_hold(self):
        t0 = time.monotonic()
        self.last_progress = t0
        # open everything at once, a few hundred per event-loop pass
        todo = iter(self.slots)
        left = [len(self.slots)]
        state = {"last": -1}

        def progress():
            if self.mode == "hold-keepalive":
                return sum(1 for s in self.slots if s.answered or s.closed)
            return sum(1 for s in self.slots if s.connected or s.closed)

        def ready(now):
            for slot in todo:
                self.open(slot, now)
                left[0] -= 1
                if left[0] % 500 == 0:
                    break
            if left[0]:
                return False
            p = progress()
            if p != state["last"]:
                state["last"] = p
                self.last_progress = now
            return p >= len(self.slots) or now - self.last_progress >= 3.0 or now - t0 >= 30.0

        self.loop(ready)
        if self.stop:
            return
        established = sum(1 for s in self.slots if s.opened_at > 0)
        still = sum(1 for s in self.slots if s.sock is not None and s.connected)
        line = "READY mode=%s opened=%d established=%d" % (self.mode, len(self.slots), established)
        if self.mode == "hold-keepalive":
            line += " answered=%d" % sum(1 for s in self.slots if s.answered)
        line += " open=%d connect_errors=%d seconds=%.1f" % (still, self.c["connect_errors"], time.monotonic() - t0)
        print(line, flush=True)
        end = time.monotonic() + self.a.hold
        self.loop(lambda now: now >= end)

    def close_all(self):
        for slot in self.slots:
            self.drop(slot)
        self.sel.close()

    def summary(self):
        c = self.c
        still = sum(1 for s in self.slots if s.sock is not None and s.connected)
        parts = ["attack=%s" % self.mode, "slots=%d" % len(self.slots),
                 "sources=%d" % len(self.a.sources)]
        keys = ["opened", "closed_by_server", "reopened", "connect_errors", "connect_timeouts"]
        for k in keys:
            parts.append("%s=%d" % (k, c[k]))
        parts.append("open_at_end=%d" % still)
        if self.mode == "keepalive":
            end = self.t_end
            late = 0
            worst = 0.0
            for s in self.slots:
                if s.start >= end:
                    continue
                gap = s.max_gap
                tail = end - (s.last_answer if s.last_answer is not None else s.start)
                gap = max(gap, tail)
                worst = max(worst, gap)
                if gap > self.a.deadline:
                    late += 1
            failures = c["connect_errors"] + c["request_timeouts"] + c["non2xx"]
            lat = sorted(self.lat)
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0.0
            parts += ["sent=%d" % c["sent"], "answered=%d" % c["answered"],
                      "failures=%d" % failures, "request_timeouts=%d" % c["request_timeouts"],
                      "non2xx=%d" % c["non2xx"], "resent=%d" % c["resent"],
                      "clients_late=%d" % late, "max_gap_s=%.1f" % worst, "p99_ms=%.1f" % p99]
        if self.mode == "download":
            parts += ["ok=%d" % c["ok"], "refused=%d" % c["refused"]]
        parts += ["bytes_sent=%d" % c["bytes_sent"], "bytes_received=%d" % c["bytes_received"]]
        if self.mode != "keepalive":
            parts.append("seconds=%.1f" % (self.t_end - self.t0))
        return " ".join(parts)


def main():
    p = argparse.ArgumentParser(description="hostile clients against 127.0.0.1 (see the module docstring)")
    p.add_argument("mode", choices=MODES)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--slots", type=int, default=None,
                   help="connections (slowloris/slowbody 1000, keepalive 600, idle 5000, hold 10000)")
    p.add_argument("--duration", type=float, default=20.0, help="attack modes: seconds to run")
    p.add_argument("--hold", type=float, default=60.0, help="hold modes: seconds to hold after READY")
    p.add_argument("--sources", type=parse_sources, default=parse_sources("127.0.1.1-127.0.1.250"),
                   help="source addresses FIRST-LAST in 127.0.0.0/8 (or one address)")
    p.add_argument("--interval", type=float, default=None,
                   help="seconds between header lines (5), body bytes (1) or keep-alive requests (4)")
    p.add_argument("--deadline", type=float, default=8.0, help="keepalive: seconds a request may take")
    p.add_argument("--rate", type=float, default=600.0, help="download: bytes a second read")
    p.add_argument("--path", default=None,
                   help="slowbody: the path POSTed to (/14b.txt); download: the path read (/big)")
    p.add_argument("--connect-timeout", type=float, default=10.0,
                   help="attack modes: give up a connect after this long (then reopen)")
    args = p.parse_args()
    if not 0 < args.port < 65536:
        p.error("bad port")
    if args.slots is None:
        args.slots = {"slowloris": 1000, "slowbody": 1000, "keepalive": 600, "idle": 5000,
                      "download": 600}.get(args.mode, 10000)
    if args.slots < 1:
        p.error("--slots must be positive")
    nofile = raise_nofile()
    if args.slots + 64 > nofile:
        p.error("--slots %d needs more descriptors than RLIMIT_NOFILE allows (%d)" % (args.slots, nofile))

    attack = Attack(args)

    def on_signal(*_):
        attack.stop = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    try:
        if attack.hold_mode:
            attack.t0 = time.monotonic()
            attack.run_hold()
            attack.t_end = time.monotonic()
        else:
            attack.run_attack()
        summary = attack.summary()
    finally:
        attack.close_all()
    print(summary, flush=True)


if __name__ == "__main__":
    main()
