package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/meshcdn/meshcdn/node"
)

// runHealthcheck probes the node's own readiness endpoint, so a container
// image without a shell can have a HEALTHCHECK: exit 0 when ready, 1 when
// not (or not answering).
func runHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meshcdn healthcheck", flag.ContinueOnError)
	setUsage(fs, stdout, "Usage: meshcdn healthcheck [--addr ADDR] [--path PATH] [--timeout D]\n\nExits 0 if the local node answers its readiness probe with 200 (for container HEALTHCHECKs), 1 if not.\n")
	addr := fs.String("addr", "", "the node's metrics `address` (default: MESHCDN_METRICS, else "+node.DefaultMetricsAddr+"), on loopback")
	path := fs.String("path", "/readyz", "`path` to probe")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	// Not parseFlags: the edge's MESHCDN_* variables are not this command's.
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	a := *addr
	if a == "" {
		a = os.Getenv("MESHCDN_METRICS")
	}
	if a == "" || a == "off" {
		a = node.DefaultMetricsAddr
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return usageError{err: fmt.Errorf("healthcheck --addr: %q is not host:port", a)}
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1" // the node listens on every address: probe loopback
	}
	if !strings.HasPrefix(*path, "/") {
		return usageError{err: fmt.Errorf("healthcheck --path: %q does not start with /", *path)}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	url := "http://" + net.JoinHostPort(host, port) + *path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usageError{err: err}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("not healthy: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("not healthy: %s answered %d %s", url, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(stdout, "healthy: %s answered %d\n", url, resp.StatusCode)
	return nil
}
