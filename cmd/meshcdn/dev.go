package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/meshcdn/meshcdn/internal/demoorigin"
	"github.com/meshcdn/meshcdn/node"
)

// runDev starts the demo origin and an edge in front of it, prints how to try
// them, and runs until ctx ends (Ctrl-C).
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meshcdn dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	originAddr := fs.String("origin-http", "127.0.0.1:8000", "demo origin listen `address`")
	httpAddr := fs.String("http", "127.0.0.1:8080", "edge client listen `address`")
	metricsAddr := fs.String("metrics", "127.0.0.1:9090", "edge metrics listen `address`")
	latency := fs.Duration("latency", 20*time.Millisecond, "delay the demo origin adds to every request")
	logLevel := fs.String("log-level", "warn", "log level: debug, info, warn or error")
	accessLog := fs.Bool("access-log", false, "log one line per request")
	if err := parseFlags(fs, args, os.Getenv); err != nil {
		return err
	}
	lg, err := newLogger(stderr, "text", *logLevel)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *originAddr)
	if err != nil {
		return fmt.Errorf("demo origin: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var originErr error
	wg.Go(func() { originErr = serveUntil(ctx, ln, demoorigin.New(demoorigin.Options{Latency: *latency})) })
	defer wg.Wait()

	originURL := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	n, err := node.New(node.Config{
		Name: "edge-1", HTTPAddr: *httpAddr, MetricsAddr: *metricsAddr,
		Origins: []*url.URL{originURL}, AccessLog: *accessLog, Logger: lg,
	})
	if err != nil {
		cancel()
		return err
	}
	if err := n.Start(ctx); err != nil {
		cancel()
		return err
	}
	edge := "http://" + n.HTTPAddr()
	fmt.Fprintf(stdout, `meshcdn dev cluster is up.
  demo origin  %[1]s
  edge-1       %[2]s   (metrics http://%[3]s/metrics)

Try:
  curl -si %[2]s/css/site.css | grep -i cache-status   # fwd=uri-miss, then hit
  curl -si %[2]s/css/site.css | grep -i cache-status
  curl -si %[2]s/api/time                               # dynamic: fwd=bypass
  curl -s  %[1]s/_origin/stats                          # requests the origin served
  curl -s -r 0-99 %[2]s/media/sample.mp4 | wc -c        # Range from the cache
Ctrl-C stops everything.
`, originURL, edge, n.MetricsAddr())
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	err = n.Shutdown(sctx)
	cancel()
	wg.Wait()
	if err == nil {
		err = originErr
	}
	return err
}
