package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustInit(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if err := InitCA(dir, 0); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustIssue(t *testing.T, dir, name string, hosts ...string) tls.Certificate {
	t.Helper()
	if _, err := Issue(dir, name, RoleMember, hosts, 0); err != nil {
		t.Fatal(err)
	}
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pool(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	ca, _, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	p.AddCert(ca)
	return p
}

// The CA and a node certificate: keys only the owner can read, the node's
// name in the SAN peers check, its hosts and IPs, client and server use,
// chained to the CA, never outliving it; nothing is overwritten.
func TestInitAndIssue(t *testing.T) {
	dir := mustInit(t)
	for _, f := range []string{CAKeyFile} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v; want mode 0600", f, st.Mode(), err)
		}
	}
	if err := InitCA(dir, 0); !errors.Is(err, ErrExists) {
		t.Fatalf("a second init: %v; want ErrExists", err)
	}
	mustIssue(t, dir, "edge-1", "edge-1.mesh.internal", "10.0.0.7", "::1")
	raw, _ := os.ReadFile(filepath.Join(dir, "edge-1.pem"))
	cert, err := parseCert(raw)
	if err != nil {
		t.Fatal(err)
	}
	if name, ok := MemberName(cert); !ok || name != "edge-1" {
		t.Errorf("member name %q %v", name, ok)
	}
	if len(cert.DNSNames) != 1 || len(cert.IPAddresses) != 2 || cert.IsCA {
		t.Errorf("SANs %v %v, CA %v", cert.DNSNames, cert.IPAddresses, cert.IsCA)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool(t, dir), KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("usage %v: %v", usage, err)
		}
	}
	if d := time.Until(cert.NotAfter); d < DefaultNodeValidity-2*time.Hour || d > DefaultNodeValidity {
		t.Errorf("valid for %v; want the default %v", d, DefaultNodeValidity)
	}
	if st, _ := os.Stat(filepath.Join(dir, "edge-1-key.pem")); st.Mode().Perm() != 0o600 {
		t.Errorf("node key mode %v", st.Mode())
	}
	if _, err := Issue(dir, "edge-1", RoleMember, nil, 0); !errors.Is(err, ErrExists) {
		t.Errorf("issuing twice: %v; want ErrExists", err)
	}
	if _, err := Issue(dir, "long", RoleMember, nil, 2*DefaultCAValidity); err != nil {
		t.Fatal(err)
	}
	raw, _ = os.ReadFile(filepath.Join(dir, "long.pem"))
	long, _ := parseCert(raw)
	ca, _, _ := LoadCA(dir)
	if long.NotAfter.After(ca.NotAfter) {
		t.Error("a node certificate outlives its CA")
	}
}

// Clear errors for what cannot be issued.
func TestIssueErrors(t *testing.T) {
	dir := mustInit(t)
	for _, c := range []struct{ name, host, want string }{
		{"", "", "name"},
		{"../x", "", "name"},
		{"a b", "", "name"},
		{"ok", "not a host!", "host"},
	} {
		_, err := Issue(dir, c.name, RoleMember, []string{c.host}, 0)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Issue(%q, %q): %v; want an error about the %s", c.name, c.host, err, c.want)
		}
	}
	if _, err := Issue(t.TempDir(), "n1", RoleMember, nil, 0); err == nil || !strings.Contains(err.Error(), "meshcdn ca init") {
		t.Errorf("without a CA: %v", err)
	}
}

// Two nodes of one CA complete a mutual TLS handshake and learn each
// other's member name; a node of another CA is refused.
func TestMutualTLS(t *testing.T) {
	dir := mustInit(t)
	server, client := mustIssue(t, dir, "n1", "127.0.0.1"), mustIssue(t, dir, "n2")
	other := mustInit(t)
	stranger := mustIssue(t, other, "n3")
	roots := pool(t, dir)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{server},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	names := make(chan string, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err != nil {
				names <- "refused"
			} else {
				name, _ := MemberName(tc.ConnectionState().PeerCertificates[0])
				names <- name
			}
			c.Close()
		}
	}()
	dial := func(c tls.Certificate) error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(),
			&tls.Config{Certificates: []tls.Certificate{c}, RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.Read(make([]byte, 1)) // TLS 1.3: the server's verdict on the client arrives after the handshake
		return err
	}
	_ = dial(client)
	if got := <-names; got != "n2" {
		t.Errorf("the server saw %q; want the client's member name n2", got)
	}
	_ = dial(stranger)
	if got := <-names; got != "refused" {
		t.Errorf("a certificate of another CA: %q; want refused", got)
	}
}

// A mesh identity reloads from its files: a new certificate is used from
// then on, and broken files leave the one in use.
func TestMeshReload(t *testing.T) {
	dir := mustInit(t)
	mustIssue(t, dir, "n1")
	files := MeshFiles{CAFile: filepath.Join(dir, CAFile), CertFile: filepath.Join(dir, "n1.pem"), KeyFile: filepath.Join(dir, "n1-key.pem")}
	m, err := LoadMesh(files, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadMesh(files, "n2"); err == nil || !strings.Contains(err.Error(), `for member "n1", not "n2"`) {
		t.Errorf("a certificate for another node: %v", err)
	}
	before := m.cert.Load().Leaf.SerialNumber
	// Rotate: a new certificate for the same node, moved over the old files.
	next := filepath.Join(t.TempDir(), "next")
	if err := os.MkdirAll(next, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{CAFile, CAKeyFile} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		if err := os.WriteFile(filepath.Join(next, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mustIssue(t, next, "n1")
	if m.Stale() {
		t.Error("Stale before any file changed")
	}
	for _, f := range []string{"n1.pem", "n1-key.pem"} {
		if err := os.Rename(filepath.Join(next, f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if !m.Stale() {
		t.Error("not Stale after the certificate files were replaced")
	}
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	if m.cert.Load().Leaf.SerialNumber.Cmp(before) == 0 {
		t.Error("the reloaded identity still uses the old certificate")
	}
	now := m.cert.Load()
	if err := os.WriteFile(files.CertFile, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !m.Stale() {
		t.Error("not Stale after the certificate file was broken")
	}
	if err := m.Reload(); err == nil || m.cert.Load() != now {
		t.Errorf("a broken certificate file: %v; the identity in use must stay", err)
	}
	if m.Stale() {
		t.Error("Stale again before the broken file changed: the failure would be retried and logged every check")
	}
}

// With the CA key instead of a certificate, a node signs its own: for its
// name, of the CA whose key it holds (out of a bundle during a rotation),
// renewed when two thirds of its life have passed; its files are checked.
func TestSelfSigned(t *testing.T) {
	dir := mustInit(t)
	files := MeshFiles{CAFile: filepath.Join(dir, CAFile), CAKeyFile: filepath.Join(dir, CAKeyFile)}
	m, err := LoadMesh(files, "edge-7f3a")
	if err != nil {
		t.Fatal(err)
	}
	leaf := m.cert.Load().Leaf
	if name, _ := MemberName(leaf); name != "edge-7f3a" {
		t.Errorf("self-signed certificate names %q", name)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool(t, dir), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("self-signed certificate does not chain to the CA: %v", err)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > SelfIssuedValidity+time.Hour {
		t.Errorf("valid for %v", life)
	}
	if m.Stale() {
		t.Error("a fresh self-signed certificate is Stale")
	}
	m.mu.Lock()
	m.renewAt = time.Now().Add(-time.Second)
	m.mu.Unlock()
	if !m.Stale() {
		t.Error("not Stale when due for renewal")
	}
	if err := m.Reload(); err != nil || m.cert.Load().Leaf.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Errorf("renewal: %v; want a new certificate", err)
	}

	// A rotation: the bundle holds the old and the new CA, the key is the
	// new one; the certificate is of the new CA.
	next := mustInit(t)
	oldPEM, _ := os.ReadFile(files.CAFile)
	newPEM, _ := os.ReadFile(filepath.Join(next, CAFile))
	bundle := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(bundle, append(oldPEM, newPEM...), 0o644); err != nil {
		t.Fatal(err)
	}
	rot, err := LoadMesh(MeshFiles{CAFile: bundle, CAKeyFile: filepath.Join(next, CAKeyFile)}, "edge-7f3a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rot.cert.Load().Leaf.Verify(x509.VerifyOptions{Roots: pool(t, next), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("signed during a rotation: %v; want the new CA", err)
	}

	for _, c := range []struct {
		files MeshFiles
		name  string
		want  string
	}{
		{MeshFiles{CAFile: files.CAFile, CAKeyFile: filepath.Join(next, CAKeyFile)}, "n1", "does not match any certificate"},
		{files, "", "needs the node's name"},
		{MeshFiles{CAFile: files.CAFile, CAKeyFile: files.CAKeyFile, CertFile: "x"}, "n1", "excludes cert_file"},
		{MeshFiles{CertFile: "x", KeyFile: "y"}, "n1", "ca_file is required"},
		{MeshFiles{CAFile: files.CAFile, CertFile: "x"}, "n1", "cert_file and key_file go with ca_file"},
		{MeshFiles{CAFile: files.CAFile, CAKeyFile: files.CAFile}, "n1", "no PEM key"},
	} {
		if _, err := LoadMesh(c.files, c.name); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("LoadMesh(%+v, %q): %v; want %q", c.files, c.name, err, c.want)
		}
	}
}
