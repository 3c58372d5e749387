package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/meshcdn/meshcdn/internal/demoorigin"
)

func runOrigin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meshcdn origin", flag.ContinueOnError)
	setUsage(fs, stdout, "Usage: meshcdn origin [--http ADDR] [--dir DIR] [--latency D]\n\nRuns the demo origin: a generated sample site, or the files of DIR.\n")
	addr := fs.String("http", ":8000", "listen `address`")
	dir := fs.String("dir", "", "serve files from this `directory` instead of the generated sample site")
	latency := fs.Duration("latency", 0, "delay added to every request, e.g. 50ms")
	if err := parseFlags(fs, args, os.Getenv); err != nil {
		return err
	}
	if *dir != "" {
		if st, err := os.Stat(*dir); err != nil || !st.IsDir() {
			return usageError{err: fmt.Errorf("--dir %q is not a directory", *dir)}
		}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "demo origin listening on http://%s\n", ln.Addr())
	return serveUntil(ctx, ln, demoorigin.New(demoorigin.Options{Dir: *dir, Latency: *latency}))
}

// serveUntil serves h on ln until ctx ends, then drains for up to 5 seconds.
func serveUntil(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
