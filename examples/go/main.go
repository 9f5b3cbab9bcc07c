// A minimal HTTP server for `portshare run`, standard library only.  It
// serves on the listening socket portshare hands it at descriptor 3 (the
// systemd hand-off: LISTEN_FDS=1, LISTEN_PID) instead of binding, says
// READY=1 on NOTIFY_SOCKET once it serves, and on SIGTERM (portshare's drain
// signal) stops accepting, finishes the requests in flight and exits.
//
//	go build -o hello . && portshare run -l :8080 -w 4 -- ./hello
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

// listener: the socket at descriptor 3, checked the way sd_listen_fds(3)
// checks it (the variables are for this very process).
func listener() (net.Listener, error) {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || os.Getenv("LISTEN_FDS") != "1" {
		return nil, fmt.Errorf("no listening socket at fd 3: run me under portshare run (or systemd)")
	}
	f := os.NewFile(3, "listener")
	defer f.Close() // FileListener works on a duplicate
	return net.FileListener(f)
}

// notify sends one sd_notify message: a datagram to NOTIFY_SOCKET (a path,
// or @name for an abstract socket, which Go's net package understands as
// written).  No-op when the variable is unset.
func notify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}

func main() {
	ln, err := listener()
	if err != nil {
		log.Fatal(err)
	}
	body := fmt.Sprintf("hello from go pid=%d slot=%s gen=%s\n", os.Getpid(),
		os.Getenv("PORTSHARE_SLOT"), os.Getenv("PORTSHARE_GENERATION"))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, body)
	})}

	// Go exits at once on SIGTERM unless told otherwise: take it, then
	// Shutdown closes the listener, closes idle connections, and waits
	// for the active ones to finish their response.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		<-stop
		if err := srv.Shutdown(context.Background()); err != nil {
			log.Print(err)
		}
		close(done)
	}()

	// The socket already listens: a connection that arrives now waits in
	// its queue until Serve accepts it, so ready can be said first.
	if err := notify("READY=1"); err != nil {
		log.Print("sd_notify: ", err)
	}
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		log.Fatal(err)
	}
	<-done
}
