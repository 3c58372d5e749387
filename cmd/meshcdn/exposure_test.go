package main

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/node/tlsconf"
)

// TestMeshExposure: an edge whose gossip or peer listener is beyond
// loopback starts only with both a gossip key and mesh TLS, or with the
// explicit --mesh-insecure, which is warned about.
func TestMeshExposure(t *testing.T) {
	dir := t.TempDir()
	if err := tlsconf.InitCA(dir, 0); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "gossip.key")
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	if err := os.WriteFile(keyFile, []byte("# the first key sends\n"+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"edge", "--origin", "http://127.0.0.1:1", "--http", "127.0.0.1:0", "--metrics", "off", "--admin", "off"}
	tlsFlags := []string{"--mesh-ca", filepath.Join(dir, tlsconf.CAFile), "--mesh-ca-key", filepath.Join(dir, tlsconf.CAKeyFile)}
	exposed := []string{"--gossip", "0.0.0.0:0", "--peer", "0.0.0.0:0"}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"defaults", nil, `gossip ":7946" and peer ":7070" listen beyond loopback without a gossip key or mesh TLS`},
		{"key only", append([]string{"--gossip-key", key}, exposed...), `gossip "0.0.0.0:0" and peer "0.0.0.0:0" listen beyond loopback without mesh TLS`},
		{"TLS only", append(append([]string{"--gossip", "127.0.0.1:0"}, tlsFlags...), "--peer", "0.0.0.0:0"), `peer "0.0.0.0:0" listen beyond loopback without a gossip key`},
		{"both key flags", []string{"--gossip-key", key, "--gossip-key-file", keyFile}, "--gossip-key and --gossip-key-file exclude each other"},
	} {
		var stdout, stderr testutil.SyncBuffer
		code := run(t.Context(), append(append([]string{}, base...), c.args...), &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), c.want) ||
			(!strings.Contains(c.name, "flags") && !strings.Contains(stderr.String(), "--mesh-insecure")) {
			t.Errorf("%s: exit %d, stderr %q; want 2, %q and --mesh-insecure", c.name, code, stderr.String(), c.want)
		}
	}

	start := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithCancel(t.Context())
		var stdout, stderr testutil.SyncBuffer
		code := make(chan int, 1)
		go func() {
			code <- run(ctx, append(append(append([]string{}, base...), exposed...), args...), &stdout, &stderr)
		}()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(stderr.String(), "edge node started") {
			select {
			case c := <-code:
				cancel()
				t.Fatalf("%v: exit %d before starting: %s", args, c, stderr.String())
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("%v: did not start: %s", args, stderr.String())
			}
		}
		cancel()
		if c := <-code; c != 0 {
			t.Errorf("%v: exit %d after stopping", args, c)
		}
		return stderr.String()
	}
	if log := start("--mesh-insecure"); !strings.Contains(log, "level=WARN msg=\"mesh.insecure: gossip") ||
		!strings.Contains(log, "without a gossip key or mesh TLS") {
		t.Errorf("--mesh-insecure started without the warning:\n%s", log)
	}
	if log := start(append([]string{"--gossip-key-file", keyFile}, tlsFlags...)...); strings.Contains(log, "insecure") {
		t.Errorf("a protected mesh warned:\n%s", log)
	}
}
