#!/usr/bin/env python3
"""idle_conns.py PORT N [PATH] - open N keep-alive connections to
127.0.0.1:PORT, send one GET PATH (default /) on each and read its whole
response, so that every connection has served a request and is now idle in
keep-alive; print "ready N" and hold them all until stdin is closed.

For the memory-per-idle-connection measurements (bench/run, the HTTP
worker's memory test): the server's VmRSS before and while these are held.
"""
import resource
import socket
import sys


def read_response(s):
    """Read one response with Content-Length; return its status code."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("idle_conns: connection closed before a response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("idle_conns: connection closed in a body")
        body += chunk
    return int(head.split(b" ")[1])


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    path = sys.argv[3] if len(sys.argv) > 3 else "/"
    want = n + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path).encode()
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        conns.append(s)
        if len(conns) % 256 == 0:  # read as we go: no deep backlog of responses
            for c in conns[-256:]:
                status = read_response(c)
                if status != 200:
                    raise SystemExit("idle_conns: status %d" % status)
    for c in conns[len(conns) - len(conns) % 256:]:
        status = read_response(c)
        if status != 200:
            raise SystemExit("idle_conns: status %d" % status)
    print("ready %d" % n, flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
