package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/meshcdn/meshcdn/internal/demoorigin"
	"github.com/meshcdn/meshcdn/node"
	"github.com/meshcdn/meshcdn/node/tlsconf"
)

// runDev starts the demo origin and an edge in front of it, prints how to try
// them, and runs until ctx ends (Ctrl-C).
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meshcdn dev", flag.ContinueOnError)
	setUsage(fs, stdout, "Usage: meshcdn dev [flags]\n\nRuns the demo origin and three meshed edges on 127.0.0.1 (what make run starts); Ctrl-C stops them.\n")
	originAddr := fs.String("origin-http", "127.0.0.1:8000", "demo origin listen `address`")
	httpAddr := fs.String("http", "127.0.0.1:8080", "first edge's client listen `address`; the others take the next ports")
	httpsAddr := fs.String("https", "127.0.0.1:8443", "first edge's HTTPS listen `address` (a certificate for localhost is made for it), or off; the others take the next ports")
	metricsAddr := fs.String("metrics", "127.0.0.1:9090", "first edge's metrics listen `address`; the others take the next ports")
	adminAddr := fs.String("admin", "127.0.0.1:7071", "first edge's gRPC admin listen `address`; the others take the next ports")
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
	pki, err := devPKI(*httpsAddr)
	if err != nil {
		cancel()
		return err
	}
	if pki != "" {
		defer os.RemoveAll(pki)
	}
	// One gossip key for the three: every edge then derives the same session
	// ticket keys, and a client resumes its TLS session on any of them.
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	var nodes []*node.Node
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		for _, n := range nodes {
			_ = n.Shutdown(sctx)
		}
	}()
	for i := range devEdges {
		cfg := node.Config{HTTPAddr: offsetPort(*httpAddr, i),
			MetricsAddr: offsetPort(*metricsAddr, i), AdminAddr: offsetPort(*adminAddr, i),
			Origins: []*url.URL{originURL}, AccessLog: *accessLog, Logger: lg}
		if pki != "" {
			cfg.HTTPSAddr = offsetPort(*httpsAddr, i)
			cfg.TLSCertFile, cfg.TLSKeyFile = filepath.Join(pki, "localhost.pem"), filepath.Join(pki, "localhost-key.pem")
		}
		n, err := startDevEdge(ctx, i, nodes, cfg, key)
		if err != nil {
			cancel()
			return err
		}
		nodes = append(nodes, n)
	}
	// Let the mesh form before inviting requests (bounded: gossip on loopback
	// converges in well under a second).
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if nodes[0].RingMembers() == devEdges && nodes[devEdges-1].RingMembers() == devEdges {
			break
		}
	}
	printDevHelp(stdout, originURL, nodes, pki)
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	var errs []error
	for _, n := range nodes {
		errs = append(errs, n.Shutdown(sctx))
	}
	cancel()
	wg.Wait()
	return errors.Join(append(errs, originErr)...)
}

// startDevEdge starts edge i of the dev cluster with cfg, joined to the
// first of those already started.
func startDevEdge(ctx context.Context, i int, started []*node.Node, cfg node.Config, gossipKey []byte) (*node.Node, error) {
	mesh := &node.MeshConfig{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Fast: true, GossipKeys: [][]byte{gossipKey}}
	if i > 0 {
		mesh.Join = []string{started[0].GossipAddr()}
	}
	cfg.Name, cfg.Version, cfg.Mesh = fmt.Sprintf("edge-%d", i+1), version, mesh
	n, err := node.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := n.Start(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// printDevHelp tells how to try the dev cluster.
func printDevHelp(stdout io.Writer, originURL *url.URL, nodes []*node.Node, pki string) {
	fmt.Fprintf(stdout, "meshcdn dev cluster is up: a demo origin and %d edges in one mesh.\n  demo origin  %s\n", devEdges, originURL)
	for _, n := range nodes {
		fmt.Fprintf(stdout, "  %s       http://%s   (status http://%s/status, metrics /metrics, admin %s", n.Name(), n.HTTPAddr(), n.MetricsAddr(), n.AdminAddr())
		if a := n.HTTPSAddr(); a != "" {
			fmt.Fprintf(stdout, ", https %s", a)
		}
		fmt.Fprintln(stdout, ")")
	}
	edge, edge3 := "http://"+nodes[0].HTTPAddr(), "http://"+nodes[2].HTTPAddr()
	fmt.Fprintf(stdout, `
Try:
  curl -si %[2]s/css/site.css | grep -i cache-status   # a miss: edge-1 asks the key's owner
  curl -si %[2]s/css/site.css | grep -i cache-status   # hit: edge-1 kept a copy
  curl -si %[3]s/css/site.css | grep -i cache-status   # another edge: from the owner, not the origin
  curl -s  %[1]s/_origin/stats                          # requests the origin served: 1
  bin/meshcdn admin --addr %[4]s locate http://127.0.0.1/css/site.css   # the owner
  bin/meshcdn admin --addr %[4]s members
  curl -si %[2]s/api/time                               # dynamic: never stored
  curl -s -r 0-99 %[2]s/media/sample.mp4 | wc -c        # Range from the cache
`, originURL, edge, edge3, nodes[0].AdminAddr())
	if a := nodes[0].HTTPSAddr(); a != "" {
		_, port, _ := net.SplitHostPort(a)
		fmt.Fprintf(stdout, "  curl -si --cacert %s https://localhost:%s/css/site.css | grep -i cache-status   # HTTPS, HTTP/2\n",
			filepath.Join(pki, tlsconf.CAFile), port)
	}
	fmt.Fprintln(stdout, "Ctrl-C stops everything.")
}

// devEdges is how many edges `meshcdn dev` starts.
const devEdges = 3

// offsetPort returns addr with its port plus i (port 0 stays 0).
func offsetPort(addr string, i int) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	p, err := strconv.Atoi(port)
	if err != nil || p == 0 {
		return addr
	}
	return net.JoinHostPort(host, strconv.Itoa(p+i))
}

// devPKI makes a throw-away CA and a certificate for localhost and
// 127.0.0.1 in a new temporary directory, which it returns; "" when the
// HTTPS listener is off.
func devPKI(httpsAddr string) (string, error) {
	if httpsAddr == "off" || httpsAddr == "" {
		return "", nil
	}
	dir, err := os.MkdirTemp("", "meshcdn-dev-pki-")
	if err != nil {
		return "", err
	}
	if err := tlsconf.InitCA(dir, 0); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("dev certificate: %w", err)
	}
	if _, err := tlsconf.Issue(dir, "localhost", tlsconf.RoleServer, []string{"localhost", "127.0.0.1", "::1"}, 0); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("dev certificate: %w", err)
	}
	return dir, nil
}
