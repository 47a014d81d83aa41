#!/usr/bin/python3
"""fetch_server: a scripted Hugging Face Hub look-alike for the fetch op's tests.

Two real HTTP servers on 127.0.0.1 (free ports): "hub" (API listing, resolve
URLs with the Hub's headers, plain files) and "cdn" (where LFS files redirect
to, reached as "localhost" so the redirect changes host). Every file served is
also written under OUTDIR so tests can compare bytes independently.

usage: fetch_server.py OUTDIR        prints "PORTS <hub> <cdn>" when ready;
                                     exits when stdin closes
GET /_stats on the hub returns every request seen (server, method, path,
whether Authorization was sent, Range); GET /_reset clears them and re-arms
one-shot faults.
"""
import hashlib
import json
import os
import random
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
GOOD_TOKEN = "secret-token"
GATED_TOKEN = "gated-ok"


def blob(seed, n):
    return random.Random(seed).randbytes(n)


# repo -> {path: (bytes, is_lfs)}; per-repo behaviour in FAULTS
REPOS = {
    "org/model": {
        "config.json": (b'{"model_type": "llama", "hidden_size": 8}\n', False),
        "model.safetensors": (blob(1, 3 * 1024 * 1024 + 5), True),
        "tokenizer.json": (b'{"version": "1.0"}', False),
        "README.md": (b"# a model\n", False),
        "sub/weights.safetensors": (blob(2, 100 * 1024), True),
    },
    "org/cut": {"model.safetensors": (blob(3, 2 * 1024 * 1024), True)},
    "org/norange": {"model.safetensors": (blob(4, 1024 * 1024 + 1), True)},
    "org/corrupt": {"model.safetensors": (blob(5, 500 * 1024), True)},
    "org/private": {"config.json": (b'{"private": true}', False),
                    "model.safetensors": (blob(6, 4096), True)},
    "org/gated": {"model.safetensors": (blob(7, 4096), True)},
    "org/flaky": {"config.json": (b'{"flaky": 1}', False),
                  "model.safetensors": (blob(8, 8192), True)},
    "org/badsize": {"model.safetensors": (blob(9, 10000), True)},
    "org/slow": {"model.safetensors": (blob(10, 4 * 1024 * 1024), True)},
}
PLAIN = {"data.bin": blob(11, 777777), "cut.bin": blob(12, 600000)}

LOCK = threading.Lock()
STATS = []
ARMED = {}


def rearm():
    ARMED.clear()
    ARMED.update({"cut": 1, "norange_cut": 1, "flaky_listing": 2, "flaky_head": 1,
                  "plain_cut": 1})


rearm()


def take(name):
    with LOCK:
        if ARMED.get(name, 0) > 0:
            ARMED[name] -= 1
            return True
        return False


def git_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Handler(BaseHTTPRequestHandler):
    server_version = "fetch-test"
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):
        pass

    def record(self):
        with LOCK:
            STATS.append({"server": self.server.role, "method": self.command,
                          "path": self.path,
                          "auth": self.headers.get("Authorization"),
                          "range": self.headers.get("Range")})

    def send(self, status, headers=(), body=b"", head=False):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def hub_error(self, status, code, head):
        hdrs = [("X-Error-Code", code)] if code else []
        body = json.dumps({"error": code or "error"}).encode()
        self.send(status, hdrs + [("Content-Type", "application/json")], body, head)

    def do_HEAD(self):
        self.guarded(head=True)

    def do_GET(self):
        self.guarded(head=False)

    def guarded(self, head):
        try:
            self.handle_any(head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (cancel tests)

    def handle_any(self, head):
        self.record()
        path = urlsplit(self.path).path
        if self.server.role == "cdn":
            return self.cdn(path, head)
        if path == "/_stats":
            with LOCK:
                body = json.dumps(STATS).encode()
            return self.send(200, [("Content-Type", "application/json")], body, head)
        if path == "/_reset":
            with LOCK:
                STATS.clear()
                rearm()
            return self.send(200, [], b"ok", head)
        if path.startswith("/plain/"):
            return self.plain(unquote(path[7:]), head)
        if path.startswith("/api/models/"):
            return self.listing(path[len("/api/models/"):], head)
        parts = path.lstrip("/").split("/", 4)
        if len(parts) == 5 and parts[2] == "resolve":
            repo = parts[0] + "/" + parts[1]
            return self.resolve(repo, unquote(parts[3]), unquote(parts[4]), head)
        self.send(404, [], b"no route", head)

    def access(self, repo, head):
        """Returns True when the request may see the repository."""
        auth = self.headers.get("Authorization")
        if repo not in REPOS:
            self.hub_error(404 if auth is None else 401, "RepoNotFound", head)
            return False
        if repo == "org/private":
            if auth is None:
                self.hub_error(401, None, head)
                return False
            if auth != "Bearer " + GOOD_TOKEN:
                self.hub_error(403, None, head)
                return False
        if repo == "org/gated" and auth != "Bearer " + GATED_TOKEN:
            self.hub_error(403, "GatedRepo", head)
            return False
        return True

    def listing(self, rest, head):
        if "/revision/" not in rest:
            return self.send(404, [], b"", head)
        repo, rev = rest.split("/revision/", 1)
        if repo == "org/flaky" and take("flaky_listing"):
            return self.send(503, [("Retry-After", "0")], b"busy", head)
        if not self.access(repo, head):
            return
        if unquote(rev) not in ("main", COMMIT, "refs/pr/1"):
            return self.hub_error(404, "RevisionNotFound", head)
        files = REPOS[repo]
        body = json.dumps({"id": repo, "sha": COMMIT,
                           "siblings": [{"rfilename": p} for p in files]}).encode()
        self.send(200, [("Content-Type", "application/json")], body, head)

    def resolve(self, repo, rev, fpath, head):
        if repo == "org/flaky" and head and take("flaky_head"):
            return self.send(429, [("Retry-After", "0")], b"slow down", head)
        if not self.access(repo, head):
            return
        if rev not in ("main", COMMIT, "refs/pr/1"):
            return self.hub_error(404, "RevisionNotFound", head)
        if fpath not in REPOS[repo]:
            return self.hub_error(404, "EntryNotFound", head)
        data, lfs = REPOS[repo][fpath]
        common = [("X-Repo-Commit", COMMIT)]
        if not lfs:
            hdrs = common + [("ETag", '"%s"' % git_sha1(data)),
                             ("Content-Length", str(len(data)))]
            return self.send(200, hdrs, data, head)
        size = len(data) - 1000 if repo == "org/badsize" else len(data)
        sha = hashlib.sha256(data).hexdigest()
        loc = "http://localhost:%d/blob/%s/%s?X-Amz-Signature=abc" % (
            self.server.cdn_port, repo, quote(fpath))
        hdrs = common + [("X-Linked-Etag", '"%s"' % sha), ("X-Linked-Size", str(size)),
                         ("ETag", 'W/"%s"' % git_sha1(data)), ("Location", loc)]
        self.send(302, hdrs, b"", head)

    def body_with_range(self, data, head, cut_at=None, ignore_range=False, corrupt=False,
                        slow=False):
        rng = self.headers.get("Range")
        start = 0
        if rng and not ignore_range:
            if not rng.startswith("bytes=") or not rng.endswith("-"):
                return self.send(400, [], b"bad range", head)
            start = int(rng[6:-1])
            if start >= len(data):
                return self.send(416, [("Content-Range", "bytes */%d" % len(data))], b"", head)
        part = data[start:]
        if corrupt and part:
            part = bytearray(part)
            part[len(part) // 2] ^= 0x01
            part = bytes(part)
        hdrs = [("Accept-Ranges", "bytes"), ("Content-Length", str(len(part)))]
        status = 200
        if start:
            status = 206
            hdrs.append(("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data))))
        self.send_response(status)
        for k, v in hdrs:
            self.send_header(k, v)
        self.end_headers()
        if head:
            return
        if cut_at is not None:
            self.wfile.write(part[:cut_at])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if slow:
            for i in range(0, len(part), 65536):
                self.wfile.write(part[i:i + 65536])
                self.wfile.flush()
                time.sleep(0.01)
            return
        self.wfile.write(part)

    def cdn(self, path, head):
        if not path.startswith("/blob/"):
            return self.send(404, [], b"", head)
        org, name, fpath = path[6:].split("/", 2)
        repo = org + "/" + name
        fpath = unquote(fpath)
        if repo not in REPOS or fpath not in REPOS[repo]:
            return self.send(404, [], b"", head)
        data = REPOS[repo][fpath][0]
        cut = None
        if not head and repo == "org/cut" and take("cut"):
            cut = 700000
        if not head and repo == "org/norange" and take("norange_cut"):
            cut = 300000
        self.body_with_range(data, head, cut_at=cut, ignore_range=repo == "org/norange",
                             corrupt=repo == "org/corrupt", slow=repo == "org/slow")

    def plain(self, name, head):
        if name == "nohead.bin" and head:
            return self.send(405, [], b"", head)
        if name == "nohead.bin":
            name = "data.bin"
        if name not in PLAIN:
            return self.send(404, [], b"not found", head)
        cut = 250000 if name == "cut.bin" and not head and take("plain_cut") else None
        self.body_with_range(PLAIN[name], head, cut_at=cut)


def main():
    out = sys.argv[1]
    for repo, files in REPOS.items():
        for p, (data, _) in files.items():
            dst = os.path.join(out, repo, p)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(dst, "wb") as f:
                f.write(data)
    for p, data in PLAIN.items():
        os.makedirs(os.path.join(out, "plain"), exist_ok=True)
        with open(os.path.join(out, "plain", p), "wb") as f:
            f.write(data)
    hub = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    cdn = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hub.role, cdn.role = "hub", "cdn"
    hub.cdn_port = cdn.cdn_port = cdn.server_address[1]
    hub.daemon_threads = cdn.daemon_threads = True
    for s in (hub, cdn):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("PORTS %d %d" % (hub.server_address[1], cdn.server_address[1]), flush=True)
    sys.stdin.read()  # until the test closes our stdin (or dies)


if __name__ == "__main__":
    main()
