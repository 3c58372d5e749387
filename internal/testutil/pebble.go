package testutil

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Pebble is a running Pebble (Let's Encrypt's ACME test server) with its
// DNS test server in front of it: names resolve to what AddA says.
type Pebble struct {
	// Directory is the ACME directory URL.
	Directory string
	// Roots trust Pebble's own HTTPS (its directory), not what it issues.
	Roots *x509.CertPool

	mgmt, dnsMgmt string
	client        *http.Client
	mu            sync.Mutex
	log           bytes.Buffer
}

// PebbleOptions shape a Pebble.
type PebbleOptions struct {
	// HTTPPort is where Pebble validates HTTP-01 challenges, on the address
	// a name resolves to.
	HTTPPort int
	// Validity is how long the certificates it issues are valid.
	Validity time.Duration
	// Listen is its ACME address, and Cert its certificate; by default a
	// free loopback port and a new certificate (see PebbleAddress).
	Listen string
	Cert   *Cert
}

// PebbleAddress is a Pebble's address and certificate chosen before it
// starts, so that its clients can be configured first.
func PebbleAddress(t testing.TB) (listen string, cert Cert) {
	t.Helper()
	listen = FreeAddr(t, "tcp")
	host, _, _ := net.SplitHostPort(listen)
	return listen, WriteCert(t, t.TempDir(), "pebble", []string{host, "localhost"}, CertOptions{})
}

// StartPebble runs bin/pebble and bin/pebble-challtestsrv (bin is the
// repository's bin directory, where `make tools` puts them) on loopback.
// The test is skipped when the binaries are missing.
func StartPebble(t testing.TB, bin string, o PebbleOptions) *Pebble {
	t.Helper()
	for _, b := range []string{"pebble", "pebble-challtestsrv"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Skipf("%s/%s is missing: `make tools` installs it (`make test` does)", bin, b)
		}
	}
	dir := t.TempDir()
	p := &Pebble{}
	if o.Listen == "" {
		l, c := PebbleAddress(t)
		o.Listen, o.Cert = l, &c
	}
	listen, cert := o.Listen, *o.Cert
	dnsAddr, dnsMgmt := FreeAddr(t, "udp"), FreeAddr(t, "tcp")
	// The management API shares the ACME address's certificate, so its IP.
	host, _, _ := net.SplitHostPort(listen)
	mgmt, ok := freePortOn(host, "tcp")
	if !ok {
		t.Fatalf("no port free on %s", host)
	}
	p.start(t, filepath.Join(bin, "pebble-challtestsrv"), nil, "-dnsserver", dnsAddr, "-management", dnsMgmt,
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "", "-defaultIPv6", "")
	// Pebble's validation resolves names over the DNS test server's TCP
	// port: it must listen before Pebble validates anything.
	p.waitFor(t, "the DNS test server", func() bool {
		c, err := net.DialTimeout("tcp", dnsAddr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		resp, err := http.Get("http://" + dnsMgmt + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt,
		"certificate": cert.CertFile, "privateKey": cert.KeyFile,
		"httpPort": o.HTTPPort, "tlsPort": 0, "externalAccountBindingRequired": false,
		"profiles": map[string]any{"default": map[string]any{"description": "test", "validityPeriod": int(o.Validity / time.Second)}},
	}}
	b, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	p.start(t, filepath.Join(bin, "pebble"), []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"},
		"-config", cfgFile, "-dnsserver", dnsAddr)
	p.Directory, p.Roots, p.mgmt, p.dnsMgmt = "https://"+listen+"/dir", cert.Pool, mgmt, "http://"+dnsMgmt
	p.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.Pool}}}
	p.waitFor(t, "pebble", func() bool {
		resp, err := p.client.Get(p.Directory)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// waitFor polls up until it holds, for at most 20 s.
func (p *Pebble) waitFor(t testing.TB, what string, up func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !up() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within 20 s:\n%s", what, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// start runs one of the servers until the test ends, its output kept.
func (p *Pebble) start(t testing.TB, path string, env []string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = (*lockedWriter)(p), (*lockedWriter)(p)
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
}

// lockedWriter appends to the Pebble's log.
type lockedWriter Pebble

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.log.Write(b)
}

// Log is what the servers printed.
func (p *Pebble) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// AddA makes host resolve to addrs for Pebble's validation.
func (p *Pebble) AddA(t testing.TB, host string, addrs ...string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"host": host, "addresses": addrs})
	resp, err := http.Post(p.dnsMgmt+"/add-a", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("add-a %s: %s", host, resp.Status)
	}
}

// IssuerRoots trusts the certificates Pebble issues (its root, made anew
// at every start).
func (p *Pebble) IssuerRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	resp, err := p.client.Get("https://" + p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble's root: %s", b)
	}
	return pool
}

// Orders counts the new orders Pebble logged.
func (p *Pebble) Orders() int {
	return strings.Count(p.Log(), "Added order \"")
}

// FreeAddr is a loopback address with a port free at the time of the
// call: for TCP, or for "udp" for both UDP and TCP (as a DNS server needs).
// The address is a random one of 127.0.0.0/8 beyond 127.0.0.x, where the
// other tests' listeners and connections are: nobody else takes the port
// between this call and the server's start.
func FreeAddr(t testing.TB, network string) string {
	t.Helper()
	for range 50 {
		ip := fmt.Sprintf("127.%d.%d.%d", 100+rand.IntN(155), rand.IntN(256), 1+rand.IntN(254))
		if addr, ok := freePortOn(ip, network); ok {
			return addr
		}
	}
	t.Fatal("no loopback port free for " + network)
	return ""
}

// freePortOn returns ip with a port free at the time of the call (see
// FreeAddr).
func freePortOn(ip, network string) (string, bool) {
	if network != "udp" {
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			return "", false
		}
		defer l.Close()
		return l.Addr().String(), true
	}
	c, err := net.ListenPacket("udp", ip+":0")
	if err != nil {
		return "", false
	}
	addr := c.LocalAddr().String()
	l, err := net.Listen("tcp", addr)
	c.Close()
	if err != nil {
		return "", false
	}
	l.Close()
	return addr, true
}
