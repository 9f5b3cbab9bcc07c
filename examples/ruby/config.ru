# A minimal Rack app for puma under `portshare run`.  puma takes systemd's
# LISTEN_FDS/LISTEN_PID itself; --bind-to-activated-sockets=only makes it
# serve on the socket portshare hands it (and bind nothing of its own, not
# even its default 0.0.0.0:9292).  On SIGTERM (portshare's drain signal)
# puma stops accepting, finishes the requests in flight and exits.
#
#   portshare run -l :9292 -w 4 -- puma --bind-to-activated-sockets=only config.ru
body = "hello from puma pid=#{Process.pid} slot=#{ENV['PORTSHARE_SLOT']} gen=#{ENV['PORTSHARE_GENERATION']}\n"
run lambda { |_env|
  [200, { "Content-Type" => "text/plain", "Content-Length" => body.bytesize.to_s }, [body]]
}
