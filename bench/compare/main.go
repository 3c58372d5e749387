// Command compare measures meshcdn beside nginx proxy_cache, Varnish and
// bare net/http and fasthttp servers (the references: Go's HTTP stacks
// without a cache) on loopback, all behind one nginx origin, with wrk: hits of 1 KiB, 100 KiB
// and 1 MiB, uncacheable pass-through, HTTPS hits, a thundering herd on a
// cold object and a purge. It prints a markdown table of medians over
// interleaved repetitions, with ratios to nginx, the spread, CPU time per
// request and peak memory, and writes it with plots to its output
// directory. `make bench-compare` runs it; it needs nginx, varnishd, wrk and h2load
// (Debian's packages) and stops exactly the processes it started.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// quick skips the herd, purge and memory measurements.
var quick bool

func main() {
	bin := flag.String("meshcdn", "bin/meshcdn", "the meshcdn binary")
	out := flag.String("out", "bench/results", "where the table, the raw results and the plots go")
	dur := flag.Duration("duration", 5*time.Second, "each wrk run")
	reps := flag.Int("reps", 5, "interleaved repetitions of every measurement")
	conns := flag.Int("connections", 50, "wrk connections")
	only := flag.String("only", "", "run only the works whose name contains this (and skip the herd, purge and memory measurements): for experiments")
	reference := flag.String("reference", "", "serve a reference from this directory (the comparison starts them so)")
	stack := flag.String("stack", "net/http", "the reference's HTTP stack: net/http or fasthttp")
	flag.Parse()
	if *reference != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		serve := serveReference
		if *stack == "fasthttp" {
			serve = serveFastReference
		}
		if err := serve(ctx, *reference); err != nil {
			log.Fatalf("reference (%s): %v", *stack, err)
		}
		return
	}
	if *only != "" {
		// The works asked for, and those their ratios are to.
		keep := map[string]bool{}
		for _, w := range works {
			if strings.Contains(w.name, *only) {
				keep[w.name], keep[w.baseOf()] = true, true
			}
		}
		works = slices.DeleteFunc(works, func(w work) bool { return !keep[w.name] })
		quick = true
	}
	log.SetFlags(0)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *bin, *out, *dur, *reps, *conns); err != nil {
		log.Fatalf("bench-compare: %v", err)
	}
}

func run(ctx context.Context, bin, out string, dur time.Duration, reps, conns int) error {
	for _, tool := range []string{"nginx", "varnishd", "wrk", "h2load"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (make bench-compare installs Debian's packages)", tool)
		}
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("the meshcdn binary: %w", err)
	}
	for _, p := range []int{originPort, nginxPort, varnishPort, meshcdnPort, meshPort, meshPort + 1, meshPort + 2,
		nginxPort + tlsOffset, meshcdnPort + tlsOffset, referencePort, referencePort + tlsOffset,
		fastReferencePort, fastReferencePort + tlsOffset} {
		if err := portFree(p); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "meshcdn-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// nginx's workers run as another user when it starts as root: they read
	// the origin's files and write the cache here.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(dir, "nginx-cache"), 0o777); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(dir, "nginx-cache"), 0o777); err != nil {
		return err
	}
	if err := content(dir); err != nil {
		return err
	}
	if err := selfSigned(dir); err != nil {
		return err
	}
	env, err := startAll(bin, dir)
	if err != nil {
		return err
	}
	defer env.stop()
	log.Printf("servers up: origin, nginx proxy_cache, Varnish, meshcdn (one node), meshcdn (3-node mesh), the net/http and fasthttp references")
	res, err := measure(ctx, env, dur, reps, conns)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	return report(res, out, dur, reps, conns)
}

// content writes the origin's files: three objects, a pass-through body
// and the herd's objects.
func content(dir string) error {
	for _, d := range []string{"obj", "pass", "herd"} {
		if err := os.MkdirAll(filepath.Join(dir, "www", d), 0o755); err != nil {
			return err
		}
	}
	write := func(name string, size int) error {
		b := make([]byte, size)
		_, _ = rand.Read(b)
		return os.WriteFile(filepath.Join(dir, "www", name), b, 0o644)
	}
	for name, size := range map[string]int{"obj/1k.bin": 1 << 10, "obj/100k.bin": 100 << 10, "obj/1m.bin": 1 << 20,
		"pass/1k.bin": 1 << 10} {
		if err := write(name, size); err != nil {
			return err
		}
	}
	for _, s := range herdTargets {
		if err := write("herd/"+s+".bin", 1<<20); err != nil {
			return err
		}
	}
	return write("herd/reference.bin", 1<<20)
}

// selfSigned writes one certificate for 127.0.0.1 that every HTTPS
// listener uses.
func selfSigned(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
}
