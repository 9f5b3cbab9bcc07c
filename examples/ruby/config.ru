# A minimal Rack app for puma under `portshare run`.  puma takes systemd's
# LISTEN_FDS/LISTEN_PID itself; --bind-to-activated-sockets=only makes it
# serve on the socket portshare hands it (and bind nothing of its own, not
# even its default 0.0.0.0:9292).  On SIGTERM (portshare's drain signal)
# puma stops accepting, finishes the requests in flight and exits.
#
#   portshare run -l :9292 -w 4 --ready notify -- puma --bind-to-activated-sockets=only config.ru
#
# One puma per slot, in single mode (no -w): portshare does the spreading.
# This file runs in that puma, the process portshare started, right before
# it accepts on the socket, which already listens (a connection that arrives
# in between waits in its queue): it says READY=1 here, and --ready notify
# waits for that however long the boot takes, where the default (--ready
# auto) would take a puma still booting after 2 s as ready.

# sd_notify(3) without a gem: one datagram to NOTIFY_SOCKET (a path, or
# @name for an abstract socket).  Does nothing outside portshare/systemd.
def notify(state)
  addr = ENV["NOTIFY_SOCKET"] or return
  addr = "\0" + addr[1..] if addr.start_with?("@")
  require "socket"
  Socket.open(:UNIX, :DGRAM) { |s| s.send(state, 0, Socket.pack_sockaddr_un(addr)) }
end

body = "hello from puma pid=#{Process.pid} slot=#{ENV['PORTSHARE_SLOT']} gen=#{ENV['PORTSHARE_GENERATION']}\n"
run lambda { |_env|
  [200, { "Content-Type" => "text/plain", "Content-Length" => body.bytesize.to_s }, [body]]
}
notify("READY=1")
