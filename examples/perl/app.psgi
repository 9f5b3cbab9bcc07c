# A minimal PSGI app for starman under `portshare run --handoff
# server-starter`: starman finds its socket in SERVER_STARTER_PORT (through
# Net::Server::SS::PreFork) instead of binding.  portshare drains it with
# SIGQUIT, starman's graceful stop, chosen by the program's name.
#
#   portshare run --handoff server-starter -l :5000 -w 2 -- starman --workers 4 app.psgi
use strict;
use warnings;

my $app = sub {
    my $body = sprintf "hello from starman pid=%d slot=%s gen=%s\n", $$,
        $ENV{PORTSHARE_SLOT} // '-', $ENV{PORTSHARE_GENERATION} // '-';
    return [200, ['Content-Type' => 'text/plain', 'Content-Length' => length $body], [$body]];
};
$app;
