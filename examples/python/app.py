# A minimal ASGI app for uvicorn under `portshare run`.  uvicorn takes the
# listening socket portshare hands it at descriptor 3 (--fd 3) instead of
# binding; on SIGTERM (portshare's drain signal) it stops accepting,
# finishes the requests in flight and exits.
#
#   portshare run -l ':8000?defer=1' -w 4 --ready notify -- uvicorn --fd 3 app:app
#   (Debian's python3-uvicorn has no uvicorn script: python3 -m uvicorn --fd 3 app:app)
#
# The app says READY=1 itself (below); --ready notify makes portshare wait
# for it however long the start takes, where the default (--ready auto)
# would count a worker still importing after 2 s as ready.  uvicorn's
# graceful stop closes every connection it has accepted but not yet read a
# request from; with defer=1 (TCP_DEFER_ACCEPT) it accepts a connection only
# once its request has arrived, which makes that rarer (not impossible).
import os
import socket

BODY = ("hello from uvicorn pid=%d slot=%s gen=%s\n" % (
    os.getpid(), os.environ.get("PORTSHARE_SLOT", "-"),
    os.environ.get("PORTSHARE_GENERATION", "-"))).encode()


def notify(state):
    """sd_notify(3) without a library: one datagram to NOTIFY_SOCKET (a path,
    or @name for an abstract socket).  Does nothing outside portshare/systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), addr)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        # uvicorn runs the startup right before it accepts on the socket,
        # which already listens: a connection that arrives in between waits
        # in its queue.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                notify("READY=1")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})
