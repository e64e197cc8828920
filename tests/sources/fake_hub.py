#!/usr/bin/env python3
"""A fake Hugging Face hub on loopback for the model-source tests (standard library only).

Serves the parts of the hub's HTTP interface the resolver uses, the way huggingface.co does:
  GET  /api/models/{repo}/revision/{rev}    {"id", "sha", "siblings": [{"rfilename"}]}
  HEAD/GET /{repo}/resolve/{rev}/{file}     small files: 200, ETag = git blob sha1;
                                            LFS files: 302 to /_lfs/{sha256} with
                                            X-Linked-Etag / X-Linked-Size; always X-Repo-Commit
  GET  /_lfs/{sha256}                       the blob, with Range (206) support
  GET  /_log                                every request seen so far, as JSON
Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo).

Usage: fake_hub.py MANIFEST.json   (prints the port it listens on, then serves until killed)
MANIFEST: {"token": "...", "repos": {"org/name": {"sha": 40hex, "refs": {"main": 40hex},
  "gated": bool, "bad_listing": bool, "files": {"name": {"path": "/abs/file", "lfs": bool,
  "drop_first": bool, "wrong_sha": bool}}}}}
  drop_first: the first GET of the blob sends half the bytes, then drops the connection.
  wrong_sha:  the announced sha256 ETag is not the content's.
"""
import hashlib
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Hub:
    def __init__(self, manifest):
        self.token = manifest.get("token", "")
        self.repos = manifest["repos"]
        self.lock = threading.Lock()
        self.log = []
        self.dropped = set()
        self.blobs = {}  # announced sha256 -> (content, file entry)
        for repo in self.repos.values():
            for name, entry in repo["files"].items():
                with open(entry["path"], "rb") as f:
                    data = f.read()
                entry["data"] = data
                if entry.get("lfs"):
                    sha = hashlib.sha256(data).hexdigest()
                    if entry.get("wrong_sha"):
                        sha = hashlib.sha256(data + b"tampered").hexdigest()
                    entry["etag"] = sha
                    self.blobs[sha] = entry
                else:
                    entry["etag"] = git_blob_sha1(data)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    hub = None

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def record(self):
        with self.hub.lock:
            self.hub.log.append({
                "method": self.command,
                "path": self.path,
                "range": self.headers.get("Range", ""),
                "authorization": self.headers.get("Authorization", ""),
            })

    def reply(self, status, headers=None, body=b"", send_body=True):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body and self.command != "HEAD":
            self.wfile.write(body)

    def error(self, status, code, message, extra=None):
        headers = {"X-Error-Code": code, "X-Error-Message": message,
                   "Content-Type": "application/json"}
        headers.update(extra or {})
        self.reply(status, headers, json.dumps({"error": message}).encode())

    def authorized(self):
        return self.headers.get("Authorization", "") == "Bearer " + self.hub.token

    def do_HEAD(self):
        self.handle_any()

    def do_GET(self):
        self.handle_any()

    def handle_any(self):
        self.record()
        path = urllib.parse.urlsplit(self.path).path
        if path == "/_log":
            with self.hub.lock:
                body = json.dumps(self.hub.log).encode()
            return self.reply(200, {"Content-Type": "application/json"}, body)
        if path.startswith("/api/models/"):
            return self.revision_api(path[len("/api/models/"):])
        if path.startswith("/_lfs/"):
            return self.lfs(path[len("/_lfs/"):])
        parts = path.lstrip("/").split("/", 4)
        if len(parts) == 5 and parts[2] == "resolve":
            repo_id = parts[0] + "/" + parts[1]
            rev = urllib.parse.unquote(parts[3])
            return self.resolve(repo_id, rev, urllib.parse.unquote(parts[4]))
        self.error(404, "NotFound", "no such route")

    def find(self, repo_id, rev):
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return None, None
        if rev == repo["sha"]:
            return repo, repo["sha"]
        return repo, repo.get("refs", {}).get(rev)

    def revision_api(self, rest):
        if "/revision/" not in rest:
            return self.error(404, "NotFound", "no such route")
        repo_id, rev = rest.split("/revision/", 1)
        rev = urllib.parse.unquote(rev)
        repo, sha = self.find(repo_id, rev)
        if repo is None:
            return self.error(404, "RepoNotFound", "Repository not found")
        if sha is None:
            return self.error(404, "RevisionNotFound", "Invalid rev id: " + rev)
        if repo.get("bad_listing"):
            return self.reply(200, {"Content-Type": "text/html"}, b"<html>maintenance</html>")
        body = json.dumps({"id": repo_id, "sha": sha, "gated": bool(repo.get("gated")),
                           "siblings": [{"rfilename": n} for n in sorted(repo["files"])]})
        self.reply(200, {"Content-Type": "application/json"}, body.encode())

    def resolve(self, repo_id, rev, name):
        repo, sha = self.find(repo_id, rev)
        if repo is None:
            return self.error(404, "RepoNotFound", "Repository not found")
        if sha is None:
            return self.error(404, "RevisionNotFound", "Invalid rev id: " + rev)
        if repo.get("gated") and not self.authorized():
            status = 403 if self.headers.get("Authorization") else 401
            return self.error(status, "GatedRepo",
                              "Access to model %s is restricted." % repo_id)
        entry = repo["files"].get(name)
        commit = {"X-Repo-Commit": sha}
        if entry is None:
            return self.error(404, "EntryNotFound", name + " does not exist", commit)
        if entry.get("lfs"):
            location = "http://%s:%d/_lfs/%s?signature=fake" % (
                self.server.server_address[0], self.server.server_address[1], entry["etag"])
            headers = dict(commit)
            headers.update({"Location": location,
                            "ETag": '"%s"' % git_blob_sha1(b"pointer " + entry["etag"].encode()),
                            "X-Linked-Etag": '"%s"' % entry["etag"],
                            "X-Linked-Size": str(len(entry["data"]))})
            return self.reply(302, headers)
        headers = dict(commit)
        headers["ETag"] = '"%s"' % entry["etag"]
        self.reply(200, headers, entry["data"])

    def lfs(self, sha):
        entry = self.hub.blobs.get(sha)
        if entry is None:
            return self.error(404, "NotFound", "no such blob")
        data = entry["data"]
        if self.command == "GET" and entry.get("drop_first"):
            with self.hub.lock:
                first = sha not in self.hub.dropped
                self.hub.dropped.add(sha)
            if first:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # SHUT_RDWR: the client sees the body cut short
                return
        start = 0
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes="):-1])
            if start >= len(data):
                return self.reply(416, {"Content-Range": "bytes */%d" % len(data)})
            headers = {"Content-Range": "bytes %d-%d/%d" % (start, len(data) - 1, len(data)),
                       "ETag": '"%s"' % sha}
            return self.reply(206, headers, data[start:])
        self.reply(200, {"ETag": '"%s"' % sha}, data)


def main():
    with open(sys.argv[1]) as f:
        manifest = json.load(f)
    Handler.hub = Hub(manifest)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
