package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshcdn/meshcdn/gossip"
	"github.com/meshcdn/meshcdn/node"
	"github.com/meshcdn/meshcdn/node/tlsconf"
)

// meshcdn ca init --gossip-key --if-absent (what the compose cluster runs
// at every start) writes a CA and a gossip key once and keeps them after;
// ca gossip-key takes the key file through a rotation.
func TestCAInitIfAbsentAndGossipKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mesh")
	runCode := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(t.Context(), append([]string{"ca"}, args...), &out, &errb)
		return code, out.String() + errb.String()
	}
	initArgs := []string{"init", "--dir", dir, "--gossip-key", "--if-absent"}
	if code, out := runCode(initArgs...); code != 0 || !strings.Contains(out, "cluster CA written") || !strings.Contains(out, "gossip key written") {
		t.Fatalf("first init: %d %q", code, out)
	}
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	key, _ := os.ReadFile(filepath.Join(dir, "gossip.key"))
	if code, out := runCode(initArgs...); code != 0 || !strings.Contains(out, "cluster CA kept") || !strings.Contains(out, "gossip key kept") {
		t.Fatalf("second init: %d %q", code, out)
	}
	ca2, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	key2, _ := os.ReadFile(filepath.Join(dir, "gossip.key"))
	if !bytes.Equal(ca, ca2) || !bytes.Equal(key, key2) {
		t.Error("--if-absent replaced the CA or the gossip key")
	}
	if code, out := runCode("init", "--dir", dir, "--gossip-key"); code != 1 || !strings.Contains(out, "already exists") {
		t.Errorf("init without --if-absent over a CA: %d %q", code, out)
	}
	// The compose cluster's HTTPS certificate: issued once, kept after.
	issueArgs := []string{"issue", "--dir", dir, "--name", "www", "--role", "server", "--host", "www.example.test", "--if-absent"}
	if code, out := runCode(issueArgs...); code != 0 || !strings.Contains(out, "server certificate for www written") {
		t.Fatalf("first issue --if-absent: %d %q", code, out)
	}
	www, _ := os.ReadFile(filepath.Join(dir, "www.pem"))
	if code, out := runCode(issueArgs...); code != 0 || !strings.Contains(out, "certificate for www kept") {
		t.Fatalf("second issue --if-absent: %d %q", code, out)
	}
	if www2, _ := os.ReadFile(filepath.Join(dir, "www.pem")); !bytes.Equal(www, www2) {
		t.Error("issue --if-absent replaced the certificate")
	}
	// A key that does not match is not kept, and not overwritten either.
	if err := os.WriteFile(filepath.Join(dir, "www-key.pem"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := runCode(issueArgs...); code != 1 || !strings.Contains(out, "already exists") {
		t.Errorf("issue --if-absent over a broken key: %d %q", code, out)
	}
	for _, step := range []string{"add", "use", "retire"} {
		if code, out := runCode("gossip-key", "--dir", dir, step); code != 0 || !strings.Contains(out, step+" done") {
			t.Fatalf("gossip-key %s: %d %q", step, code, out)
		}
	}
	keys, err := gossip.ReadKeyFile(filepath.Join(dir, "gossip.key"))
	if err != nil || len(keys) != 1 || bytes.Contains(key, []byte(base64.StdEncoding.EncodeToString(keys[0]))) {
		t.Errorf("after a rotation: %d keys, %v; want one new key", len(keys), err)
	}
}

// meshcdn ca init and issue write a CA and a node certificate that load as
// a TLS key pair naming the node; mistakes exit 2 with what to fix, and
// existing files are never overwritten (exit 1).
func TestCACommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	runCode := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(t.Context(), append([]string{"ca"}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, out, _ := runCode("init", "--dir", dir); code != 0 || !strings.Contains(out, "ca.pem") {
		t.Fatalf("init: %d %q", code, out)
	}
	if code, out, errs := runCode("issue", "--dir", dir, "--name", "edge-1", "--host", "edge-1.internal", "--host", "127.0.0.1"); code != 0 {
		t.Fatalf("issue: %d %q %q", code, out, errs)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "edge-1.pem"), filepath.Join(dir, "edge-1-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if name, ok := tlsconf.MemberName(pair.Leaf); !ok || name != "edge-1" || len(pair.Leaf.IPAddresses) != 1 {
		t.Errorf("certificate names %q %v, IPs %v", name, ok, pair.Leaf.IPAddresses)
	}
	// The other roles: an operator's client certificate, an HTTPS server's.
	for _, c := range []struct{ role, name, host string }{{"admin", "alice", ""}, {"server", "www", "www.example.test"}} {
		args := []string{"issue", "--dir", dir, "--role", c.role, "--name", c.name}
		if c.host != "" {
			args = append(args, "--host", c.host)
		}
		if code, out, errs := runCode(args...); code != 0 || !strings.HasPrefix(out, c.role+" certificate for "+c.name) {
			t.Fatalf("issue --role %s: %d %q %q", c.role, code, out, errs)
		}
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, c.name+".pem"), filepath.Join(dir, c.name+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		_, member := tlsconf.MemberName(pair.Leaf)
		admin, isAdmin := tlsconf.AdminName(pair.Leaf)
		eku := pair.Leaf.ExtKeyUsage
		switch {
		case member:
			t.Errorf("a %s certificate names a member", c.role)
		case c.role == "admin" && (!isAdmin || admin != "alice" || len(eku) != 1 || eku[0] != x509.ExtKeyUsageClientAuth):
			t.Errorf("the admin certificate: name %q %v, usages %v", admin, isAdmin, eku)
		case c.role == "server" && (isAdmin || len(eku) != 1 || eku[0] != x509.ExtKeyUsageServerAuth || pair.Leaf.DNSNames[0] != c.host):
			t.Errorf("the server certificate: usages %v, names %v", eku, pair.Leaf.DNSNames)
		}
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "init, issue or gossip-key"},
		{[]string{"gossip-key", "--dir", dir}, 2, "one step is required"},
		{[]string{"gossip-key", "--dir", dir, "spin"}, 2, `unknown step "spin"`},
		{[]string{"gossip-key", "add"}, 2, "--dir is required"},
		{[]string{"gossip-key", "--dir", dir, "add"}, 1, "gossip.key: no such file"},
		{[]string{"sign"}, 2, "unknown command"},
		{[]string{"init"}, 2, "--dir is required"},
		{[]string{"issue", "--dir", dir}, 2, "--name are required"},
		{[]string{"init", "--dir", dir, "--validity", "-1h"}, 2, "negative"},
		{[]string{"init", "--dir", dir}, 1, "already exists"},
		{[]string{"issue", "--dir", dir, "--name", "edge-1"}, 1, "already exists"},
		{[]string{"issue", "--dir", dir, "--name", "x", "--host", "a b"}, 1, "not a DNS name or an IP address"},
		{[]string{"issue", "--dir", dir, "--name", "x", "--role", "root"}, 2, `--role "root": want member, admin or server`},
		{[]string{"issue", "--dir", dir, "--name", "x", "--role", "server"}, 1, "a server certificate needs the hosts it serves (--host)"},
		{[]string{"issue", "--dir", dir, "--name", "x", "--role", "admin", "--host", "a.test"}, 1, "an admin certificate is a client's: it takes no hosts"},
	} {
		code, _, errs := runCode(c.args...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("meshcdn ca %v: exit %d, %q; want %d and %q", c.args, code, errs, c.code, c.want)
		}
	}
	if code, out, _ := runCode("-h"); code != 0 || !strings.Contains(out, "meshcdn ca issue") {
		t.Errorf("ca -h: %d %q", code, out)
	}
	if st, _ := os.Stat(filepath.Join(dir, "ca-key.pem")); st.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode %v", st.Mode())
	}
}

// meshcdn admin speaks TLS with --cacert, and presents a client certificate
// with --cert and --key to a node that requires one; without it the call
// fails.
func TestAdminCLIOverTLS(t *testing.T) {
	pki := t.TempDir()
	var errb bytes.Buffer
	for _, args := range [][]string{{"init", "--dir", pki}, {"issue", "--dir", pki, "--role", "server", "--name", "api", "--host", "127.0.0.1"},
		{"issue", "--dir", pki, "--role", "admin", "--name", "ops"}} {
		if code := run(t.Context(), append([]string{"ca"}, args...), io.Discard, &errb); code != 0 {
			t.Fatalf("ca %v: %s", args, errb.String())
		}
	}
	o := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(o.Close)
	ou, _ := url.Parse(o.URL)
	n, err := node.New(node.Config{Name: "n1", HTTPAddr: "127.0.0.1:0", MetricsAddr: "off", AdminAddr: "127.0.0.1:0",
		AdminCertFile: filepath.Join(pki, "api.pem"), AdminKeyFile: filepath.Join(pki, "api-key.pem"),
		AdminClientCAFile: filepath.Join(pki, "ca.pem"), Origins: []*url.URL{ou}})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Shutdown(t.Context()) })
	tlsArgs := []string{"--addr", n.AdminAddr(), "--timeout", "5s", "--cacert", filepath.Join(pki, "ca.pem"),
		"--cert", filepath.Join(pki, "ops.pem"), "--key", filepath.Join(pki, "ops-key.pem")}
	if out, errs, code := admin(t, append(tlsArgs, "members")...); code != 0 || !strings.Contains(out, "n1") {
		t.Errorf("members over TLS: %d %q %q", code, out, errs)
	}
	if _, _, code := admin(t, "--addr", n.AdminAddr(), "--timeout", "2s", "--cacert", filepath.Join(pki, "ca.pem"), "members"); code != 1 {
		t.Errorf("without a client certificate: exit %d, want 1", code)
	}
	if _, errs, code := admin(t, "--addr", n.AdminAddr(), "--cert", "x.pem", "--key", "y.pem", "members"); code != 2 || !strings.Contains(errs, "need --cacert") {
		t.Errorf("--cert without --cacert: exit %d %q", code, errs)
	}
}
