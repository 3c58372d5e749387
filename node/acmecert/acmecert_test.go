package acmecert

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// TestObtain: a certificate is ordered from Pebble, which validates the
// HTTP-01 challenge against a real HTTP server answering from
// ChallengeResponse; the certificate is kept on disk and loads again, and
// a new Manager on the same directory keeps the account.
func TestObtain(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	p := testutil.StartPebble(t, "../../bin", testutil.PebbleOptions{HTTPPort: port, Validity: time.Hour})
	p.AddA(t, "www.shop.test", "127.0.0.1")
	p.AddA(t, "shop.test", "127.0.0.1")
	dir := t.TempDir()
	m, err := New(Config{Directory: p.Directory, Roots: p.Roots, Dir: dir, Email: "ops@shop.test"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // the CA validates from several perspectives at once
	var asked []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.URL.Path, ChallengePrefix)
		mu.Lock()
		asked = append(asked, r.Host)
		mu.Unlock()
		ka, found := m.ChallengeResponse(token)
		if !ok || !ValidToken(token) || !found {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(ka))
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, err := m.Obtain(ctx, []string{"shop.test", "www.shop.test"})
	if err != nil {
		t.Fatalf("%v\n%s", err, p.Log())
	}
	if !c.Covers([]string{"www.shop.test", "shop.test"}) || c.NotAfter.Sub(c.NotBefore) > time.Hour+time.Minute {
		t.Errorf("certificate for %v, %v to %v", c.Names, c.NotBefore, c.NotAfter)
	}
	mu.Lock()
	if len(asked) < 2 {
		t.Errorf("the CA fetched the challenge for %v", asked)
	}
	mu.Unlock()
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := p.IssuerRoots(t)
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "www.shop.test", Intermediates: intermediates(t, c.CertPEM)}); err != nil {
		t.Errorf("the certificate does not chain to Pebble's root: %v", err)
	}
	if ra := c.RenewAt(); !ra.After(c.NotBefore) || !ra.Before(c.NotAfter) {
		t.Errorf("renew at %v", ra)
	}
	if _, err := m.Load("shop.test"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("loading what was never saved: %v", err)
	}
	if err := m.Save("shop.test", c); err != nil {
		t.Fatal(err)
	}
	back, err := m.Load("shop.test")
	if err != nil || string(back.CertPEM) != string(c.CertPEM) || string(back.KeyPEM) != string(c.KeyPEM) {
		t.Errorf("load after save: %v", err)
	}
	if fi, err := os.Stat(m.fileOf("shop.test")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("certificate file mode: %v %v", fi.Mode(), err)
	}
	// The account key is kept: a second manager orders with the same account.
	m2, err := New(Config{Directory: p.Directory, Roots: p.Roots, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !m2.client.Key.Public().(*ecdsa.PublicKey).Equal(m.client.Key.Public()) {
		t.Error("a new manager made a new account key")
	}
	if n := p.Orders(); n != 1 {
		t.Errorf("Pebble logged %d orders; want 1", n)
	}
}

// intermediates are the chain's certificates after the leaf.
func intermediates(t *testing.T, chain []byte) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for i := 0; ; i++ {
		var b *pem.Block
		b, chain = pem.Decode(chain)
		if b == nil {
			return pool
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			pool.AddCert(c)
		}
	}
}
