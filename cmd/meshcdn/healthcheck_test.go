package main

import (
	"bytes"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/meshcdn/meshcdn/node"
)

// TestHealthcheck: `meshcdn healthcheck` exits 0 for a ready node and 1 for
// one that reports not ready or does not answer; ":port" (how a container
// node listens) is probed on loopback.
func TestHealthcheck(t *testing.T) {
	n, err := node.New(node.Config{HTTPAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Origins: []*url.URL{{Scheme: "http", Host: "127.0.0.1:1"}},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(t.Context())
	var out bytes.Buffer
	if code := run(t.Context(), []string{"healthcheck", "--addr", n.MetricsAddr()}, &out, &out); code != 0 {
		t.Errorf("a running node: exit %d %q", code, out.String())
	}

	ready := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || !ready {
			http.Error(w, "not ready: draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	check := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		code := run(t.Context(), append([]string{"healthcheck"}, args...), &out, &errb)
		return out.String() + errb.String(), code
	}
	if out, code := check("--addr", ":"+port); code != 0 || !strings.Contains(out, "healthy: http://127.0.0.1:"+port+"/readyz answered 200") {
		t.Errorf("ready: exit %d %q", code, out)
	}
	t.Setenv("MESHCDN_METRICS", "0.0.0.0:"+port)
	if out, code := check(); code != 0 {
		t.Errorf("address from MESHCDN_METRICS: exit %d %q", code, out)
	}
	ready = false
	if out, code := check(); code != 1 || !strings.Contains(out, "answered 503 not ready: draining") {
		t.Errorf("not ready: exit %d %q", code, out)
	}
	srv.Close()
	if out, code := check(); code != 1 || !strings.Contains(out, "not healthy") {
		t.Errorf("not answering: exit %d %q", code, out)
	}
	if out, code := check("--addr", "nonsense"); code != 2 || !strings.Contains(out, `"nonsense" is not host:port`) {
		t.Errorf("bad address: exit %d %q", code, out)
	}
}
