// A minimal HTTP server for `portshare run`: it takes its listening socket
// from descriptor 3 (the systemd hand-off: LISTEN_FDS=1) instead of binding,
// and on SIGTERM (portshare's drain signal for node) it finishes what it
// has in flight and exits, so a reload loses no request.
//
//   portshare run -l :8080 -w 4 -- node server.js
"use strict";
const http = require("http");

const slot = process.env.PORTSHARE_SLOT || "-";
const gen = process.env.PORTSHARE_GENERATION || "-";

let draining = false;

const server = http.createServer((req, res) => {
  // while draining, each response ends its connection
  if (draining) res.setHeader("Connection", "close");
  const body = `hello from node pid=${process.pid} slot=${slot} gen=${gen}\n`;
  res.writeHead(200, {
    "Content-Type": "text/plain",
    "Content-Length": Buffer.byteLength(body),
  });
  res.end(body);
});

if (process.env.LISTEN_FDS !== "1" || process.env.LISTEN_PID !== String(process.pid)) {
  console.error("server.js: no listening socket at fd 3; run me under portshare run (or systemd)");
  process.exit(2);
}
// The socket is already bound and listening: node only adds it to its loop.
server.listen({ fd: 3 });

process.on("SIGTERM", () => {
  draining = true;
  // Stop accepting.  The other workers (and the next generation) share the
  // port, so what is still queued goes to them, not to a refused connect.
  server.close(() => process.exit(0));
  // A keep-alive connection with no request on it would hold close() open
  // until it times out: close those now; a busy one closes after its
  // response (the Connection: close above).
  server.closeIdleConnections();
});
