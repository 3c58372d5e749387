package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// TestSIGHUPReloadsCertificates: `meshcdn edge` serves a new HTTPS
// certificate after SIGHUP, in the same process.
func TestSIGHUPReloadsCertificates(t *testing.T) {
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(o.Close)
	dir := t.TempDir()
	first := testutil.WriteCert(t, dir, "edge", []string{"www.example"}, testutil.CertOptions{})
	second := testutil.WriteCert(t, t.TempDir(), "edge", []string{"www.example"}, testutil.CertOptions{})
	p := startEdgeProc(t, "--gossip", "off", "--origin", o.URL, "--https", "127.0.0.1:0",
		"--tls-cert", first.CertFile, "--tls-key", first.KeyFile)
	pool := x509.NewCertPool()
	pool.AddCert(first.Leaf)
	pool.AddCert(second.Leaf)
	served := func() *x509.Certificate {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{RootCAs: pool, ServerName: "www.example"}}
		c, err := d.DialContext(t.Context(), "tcp", p.https)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.(*tls.Conn).ConnectionState().PeerCertificates[0]
	}
	if !served().Equal(first.Leaf) {
		t.Fatal("the first certificate is not served")
	}
	for _, f := range [][2]string{{second.CertFile, first.CertFile}, {second.KeyFile, first.KeyFile}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pid := p.cmd.Process.Pid
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for !served().Equal(second.Leaf) {
		select {
		case <-ctx.Done():
			t.Fatalf("the new certificate is not served 10 s after SIGHUP: %s", p.logs())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if p.cmd.Process.Pid != pid || p.cmd.ProcessState != nil {
		t.Error("the process changed")
	}

}
