#!/usr/bin/env python3
"""zmtp_garbage: sends hostile traffic to a graft-broker (used by
test_jobs_garbage.sh). Speaks ZMTP 3.0 (NULL mechanism, DEALER) by hand with
the standard library only, so it can send frames no well-behaved client
would: wrong tags, unknown commands, broken msgpack, wrong frame counts,
oversized bodies, stale DONE/FAIL for a running task (wrong attempt), and
raw bytes that are not ZMTP at all.

usage: zmtp_garbage.py HOST PORT TASK_ID
"""
import os
import random
import socket
import time
import struct
import sys


def connect(host, port):
    s = socket.create_connection((host, port), timeout=5)
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31
    s.sendall(greeting)
    got = b""
    while len(got) < 64:
        chunk = s.recv(64 - len(got))
        if not chunk:
            raise RuntimeError("broker closed during the greeting")
        got += chunk

    def prop(name, value):
        return bytes([len(name)]) + name + struct.pack(">I", len(value)) + value

    body = b"\x05READY" + prop(b"Socket-Type", b"DEALER") + prop(b"Identity", b"")
    s.sendall(b"\x04" + bytes([len(body)]) + body)
    return s


def frame(data, more):
    flags = 0x01 if more else 0x00
    if len(data) < 256:
        return bytes([flags, len(data)]) + data
    return bytes([flags | 0x02]) + struct.pack(">Q", len(data)) + data


def send(s, frames):
    s.sendall(b"".join(frame(f, i + 1 < len(frames)) for i, f in enumerate(frames)))


def mp_str(b):
    b = b.encode() if isinstance(b, str) else b
    if len(b) < 32:
        return bytes([0xA0 | len(b)]) + b
    return b"\xd9" + bytes([len(b)]) + b


def mp_map(items):
    out = bytes([0x80 | len(items)])
    for k, v in items:
        out += mp_str(k) + v
    return out


def main():
    host, port, task = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rnd = random.Random(1234)
    tag = b"GRAFT/1"
    zero = "sha256:" + "0" * 64
    s = connect(host, port)
    msgs = [
        [b"GRAFT/2", b"\x01", b"\x80"],                    # wrong tag
        [tag, b"\x99", b"\x80"],                           # unknown command
        [tag, b"\x10", b"\x80"],                           # REPLY: wrong direction
        [tag, b"\x01", b"\xc1\xc1\xc1"],                   # not msgpack
        [tag, b"\x01", b"\x92\x01\x02"],                   # not a map
        [tag, b"\x01", b"\x81\xa3foo\x01"],                # SUBMIT without pipeline
        [tag, b"\x01"],                                    # two frames
        [tag, b"\x01", b"\x80", b"\x80"],                  # four frames
        [tag, b"\x01\x02", b"\x80"],                       # two-byte command
        [tag, b"\x01", b"\xdf\xff\xff\xff\xff"],           # map claiming 4G entries
        [tag, b"\x01", b"\x80\x00"],                       # trailing byte
        [tag, b"\x23", mp_map([("task", mp_str(task)), ("attempt", b"\x63"),
                               ("outputs", mp_map([("out", mp_str(zero))]))])],  # stale DONE
        [tag, b"\x24", mp_map([("task", mp_str(task)), ("attempt", b"\x63"),
                               ("error", mp_str("stale")), ("retryable", b"\xc2")])],  # stale FAIL
        [tag, b"\x03", mp_map([("job", mp_str("j" + "0" * 16))])],  # cancel of an unknown job
    ]
    for m in msgs:
        send(s, m)
    for _ in range(200):                                # random frames
        n = rnd.randint(1, 4)
        send(s, [os.urandom(rnd.randint(0, 64)) for _ in range(n)])
    # an oversized body last, on its own connection: the broker may drop the
    # connection at its message-size limit
    s2 = connect(host, port)
    try:
        send(s2, [tag, b"\x01", b"\x80" * (9 << 20)])
    except OSError:
        pass
    s2.close()
    # Hold the connection open while the broker reads what is queued: on a
    # peer's disconnect libzmq keeps unread messages only for the socket's
    # linger time (1 s), which a loaded machine can exceed; the test counts
    # drops, so all must be read.
    time.sleep(5)
    s.close()
    # not ZMTP at all
    for payload in (os.urandom(4096), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\xff" * 100):
        r = socket.create_connection((host, port), timeout=5)
        r.sendall(payload)
        r.close()
    print("sent", len(msgs) + 201, "hostile messages and 3 raw connections")


if __name__ == "__main__":
    main()
