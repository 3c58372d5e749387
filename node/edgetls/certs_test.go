package edgetls

import (
	"crypto/tls"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// hello is a client hello for name from a client that supports what Go's
// client does.
func hello(name string) *tls.ClientHelloInfo {
	return &tls.ClientHelloInfo{
		ServerName:        name,
		SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
		SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256, tls.PSSWithSHA256, tls.PKCS1WithSHA256,
			tls.ECDSAWithP384AndSHA384, tls.PSSWithSHA384},
		SupportedCurves: []tls.CurveID{tls.X25519, tls.CurveP256},
		SupportedPoints: []uint8{0},
		CipherSuites:    []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
	}
}

// TestSNI: a server name gets a certificate of its own site that covers it
// (exact, then a wildcard), among several the one the client supports,
// otherwise the default certificate; never a certificate of another site,
// even one that covers the name.
func TestSNI(t *testing.T) {
	dir := t.TempDir()
	shop := testutil.WriteCert(t, dir, "shop", []string{"shop.example", "www.shop.example"}, testutil.CertOptions{})
	shopRSA := testutil.WriteCert(t, dir, "shop-rsa", []string{"shop.example"}, testutil.CertOptions{RSA: true})
	img := testutil.WriteCert(t, dir, "img", []string{"*.img.example"}, testutil.CertOptions{})
	// blog's certificate also names shop.example: it must never answer for shop.
	blog := testutil.WriteCert(t, dir, "blog", []string{"blog.example", "shop.example", "other.example"}, testutil.CertOptions{})
	deflt := testutil.WriteCert(t, dir, "default", []string{"edge.example"}, testutil.CertOptions{})
	sites := map[string]string{"shop.example": "0", "www.shop.example": "0", "a.img.example": "1",
		"blog.example": "2", "other.example": "3"}
	s, err := New([]Source{
		{Label: "tls_cert_file", Pairs: []Pair{{deflt.CertFile, deflt.KeyFile}}},
		{Site: "0", Label: "sites[0].certificates", Pairs: []Pair{{shop.CertFile, shop.KeyFile}, {shopRSA.CertFile, shopRSA.KeyFile}}},
		{Site: "1", Label: "sites[1].certificates", Pairs: []Pair{{img.CertFile, img.KeyFile}}},
		{Site: "2", Label: "sites[2].certificates", Pairs: []Pair{{blog.CertFile, blog.KeyFile}}},
	}, func(h string) string { return sites[h] })
	if err != nil {
		t.Fatal(err)
	}
	rsaOnly := hello("shop.example")
	rsaOnly.SignatureSchemes = []tls.SignatureScheme{tls.PSSWithSHA256, tls.PKCS1WithSHA256}
	rsaOnly.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
	rsaOnly.SupportedVersions = []uint16{tls.VersionTLS12}
	for _, tt := range []struct {
		hello *tls.ClientHelloInfo
		want  testutil.Cert
	}{
		{hello("shop.example"), shop},
		{hello("SHOP.example."), shop},
		{rsaOnly, shopRSA},
		{hello("www.shop.example"), shop},
		{hello("a.img.example"), img},
		{hello("blog.example"), blog},
		{hello("other.example"), deflt}, // blog's certificate names it, but it is site 3's
		{hello("nosite.example"), deflt},
		{hello(""), deflt},
	} {
		c, err := s.GetCertificate(tt.hello)
		if err != nil || !c.Leaf.Equal(tt.want.Leaf) {
			got := ""
			if c != nil {
				got = strings.Join(c.Leaf.DNSNames, ",")
			}
			t.Errorf("%q: got %s, %v; want %v", tt.hello.ServerName, got, err, tt.want.Leaf.DNSNames)
		}
	}

	// Without a default, a name no site certificate covers fails the handshake.
	s, err = New([]Source{{Site: "0", Label: "sites[0].certificates", Pairs: []Pair{{shop.CertFile, shop.KeyFile}}}},
		func(h string) string { return sites[h] })
	if err != nil {
		t.Fatal(err)
	}
	if c, err := s.GetCertificate(hello("blog.example")); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("blog.example without a default certificate: %v, %v", c, err)
	}
}

// TestLoadErrors: a certificate that cannot serve is refused at start with
// the setting, the file and the problem.
func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	good := testutil.WriteCert(t, dir, "good", []string{"a.example"}, testutil.CertOptions{})
	other := testutil.WriteCert(t, dir, "other", []string{"a.example"}, testutil.CertOptions{})
	expired := testutil.WriteCert(t, dir, "expired", []string{"a.example"},
		testutil.CertOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	future := testutil.WriteCert(t, dir, "future", []string{"a.example"},
		testutil.CertOptions{NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(48 * time.Hour)})
	garbage := dir + "/garbage.pem"
	if err := os.WriteFile(garbage, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		pair Pair
		want string
	}{
		{Pair{expired.CertFile, expired.KeyFile}, "sites[0].certificates[0]: " + expired.CertFile + ": expired on "},
		{Pair{future.CertFile, future.KeyFile}, "not valid before"},
		{Pair{good.CertFile, other.KeyFile}, "the key in " + other.KeyFile + " does not match the certificate"},
		{Pair{garbage, good.KeyFile}, garbage + ": not a certificate"},
		{Pair{good.CertFile, garbage}, garbage + ": "},
		{Pair{dir + "/missing.pem", good.KeyFile}, "missing.pem: no such file"},
	} {
		_, err := New([]Source{{Site: "0", Label: "sites[0].certificates", Pairs: []Pair{tt.pair}}}, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v; want %q", tt.pair, err, tt.want)
		}
	}
}

// TestReload: a changed file is seen and served; a broken one keeps the
// certificate in use and is not tried again until it changes again.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	first := testutil.WriteCert(t, dir, "site", []string{"a.example"}, testutil.CertOptions{})
	s, err := New([]Source{{Label: "tls_cert_file", Pairs: []Pair{{first.CertFile, first.KeyFile}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Stale() {
		t.Fatal("stale right after loading")
	}
	time.Sleep(10 * time.Millisecond) // a new modification time
	second := testutil.WriteCert(t, dir, "site", []string{"a.example"}, testutil.CertOptions{})
	if !s.Stale() {
		t.Fatal("a rewritten certificate is not seen")
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.GetCertificate(hello("a.example")); !c.Leaf.Equal(second.Leaf) {
		t.Error("the new certificate is not served after the reload")
	}
	if err := os.WriteFile(first.CertFile, []byte("-----BEGIN CERTIFICATE-----\ntruncated"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !s.Stale() {
		t.Fatal("a broken certificate file is not seen")
	}
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), "tls_cert_file: "+first.CertFile+": not a certificate") {
		t.Errorf("reload of a broken file: %v", err)
	}
	if c, _ := s.GetCertificate(hello("a.example")); !c.Leaf.Equal(second.Leaf) {
		t.Error("a broken file replaced the certificate in use")
	}
	if s.Stale() {
		t.Error("a broken file is tried again before it changes")
	}
}
