package main

import (
	"bytes"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshcdn/meshcdn/node/tlsconf"
)

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
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "init or issue"},
		{[]string{"sign"}, 2, "unknown command"},
		{[]string{"init"}, 2, "--dir is required"},
		{[]string{"issue", "--dir", dir}, 2, "--name are required"},
		{[]string{"init", "--dir", dir, "--validity", "-1h"}, 2, "negative"},
		{[]string{"init", "--dir", dir}, 1, "already exists"},
		{[]string{"issue", "--dir", dir, "--name", "edge-1"}, 1, "already exists"},
		{[]string{"issue", "--dir", dir, "--name", "x", "--host", "a b"}, 1, "not a DNS name or an IP address"},
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
