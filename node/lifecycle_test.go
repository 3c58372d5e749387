package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/node/peer"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// TestHTTP2Cleartext: clients may speak HTTP/2 without TLS (h2c).
func TestHTTP2Cleartext(t *testing.T) {
	o := newOrigin(t, static("h2 body", "max-age=600"))
	n := startNode(t, o, Config{})
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: protocols}}
	defer client.CloseIdleConnections() // else Shutdown waits out HTTP/2's GOAWAY grace
	for _, want := range []string{"meshcdn; fwd=uri-miss", "meshcdn; hit"} {
		resp, err := client.Get("http://" + n.HTTPAddr() + "/h2.css")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || string(b) != "h2 body" || !strings.HasPrefix(resp.Header.Get("Cache-Status"), want) {
			t.Errorf("proto %s body %q Cache-Status %q", resp.Proto, b, resp.Header.Get("Cache-Status"))
		}
	}
}

// TestMetricsAndHealth: /metrics exposes the request, origin and store series;
// /healthz and /readyz answer.
func TestMetricsAndHealth(t *testing.T) {
	o := newOrigin(t, static("x", "max-age=600"))
	n := startNode(t, o, Config{})
	do(t, n, "GET", "/m.css")
	do(t, n, "GET", "/m.css")
	base := "http://" + n.MetricsAddr()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	for _, want := range []string{
		`meshcdn_requests_total{cache_status="hit",site="default"} 1`,
		`meshcdn_requests_total{cache_status="miss",site="default"} 1`,
		`meshcdn_origin_requests_total{kind="fill",site="default"} 1`,
		`meshcdn_store_objects{tier="memory"} 1`,
		`meshcdn_served_bytes_total{site="default"} 2`,
		`meshcdn_time_to_first_byte_seconds_count{cache_status="hit"} 1`,
		`meshcdn_store_evictions_total{tier="memory"} 0`,
		`meshcdn_coalesced_requests_total 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %s", code, want)
		}
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz: %d", code)
	}
}

// TestAccessLog: one line per request with its cache status.
func TestAccessLog(t *testing.T) {
	var buf testutil.SyncBuffer
	o := newOrigin(t, static("x", "max-age=600"))
	n := startNode(t, o, Config{AccessLog: true, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	do(t, n, "GET", "/log.css?q=1")
	do(t, n, "GET", "/log.css?q=1")
	logs := buf.String()
	for _, want := range []string{`msg=request`, `uri="/log.css?q=1"`, "status=200", "cache=miss", "cache=hit", "bytes=1"} {
		if !strings.Contains(logs, want) {
			t.Errorf("access log lacks %s:\n%s", want, logs)
		}
	}
}

// TestShutdownDrains: Shutdown lets an in-flight request finish, refuses new
// ones, and can be called again.
func TestShutdownDrains(t *testing.T) {
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", "4")
		_, _ = w.Write([]byte("ab"))
		w.(http.Flusher).Flush()
		<-release
		_, _ = w.Write([]byte("cd"))
	})
	n := startNode(t, o, Config{})
	addr := n.HTTPAddr()
	got := make(chan response, 1)
	go func() { got <- doMaybe(t, n, "GET", "/drain.js") }()
	eventually(t, 5*time.Second, func() bool { return o.hits.Load() == 1 })

	stopped := make(chan error, 1)
	go func() { stopped <- n.Shutdown(context.Background()) }()
	eventually(t, 5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil // the listener is closed
	})
	close(release)
	if r := <-got; r.err != nil || r.body != "abcd" {
		t.Errorf("in-flight request: %v %q", r.err, r.body)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

// TestShutdownDeadlineCutsStalledFills: a fill that never ends does not keep
// Shutdown past its context.
func TestShutdownDeadlineCutsStalledFills(t *testing.T) {
	stall := make(chan struct{})
	defer close(stall)
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		w.(http.Flusher).Flush()
		select {
		case <-stall:
		case <-r.Context().Done():
		}
	})
	n := startNode(t, o, Config{})
	go doMaybe(t, n, "GET", "/stuck.js")
	eventually(t, 5*time.Second, func() bool { return o.hits.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := n.Shutdown(ctx); err == nil {
		t.Error("Shutdown reported a clean drain while a request was stuck")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
}

// TestNoPeerConnectionsAfterShutdown: once the mesh has stopped, a fill or a
// hand-off still finishing cannot open a peer connection nobody would close.
func TestNoPeerConnectionsAfterShutdown(t *testing.T) {
	n := startCluster(t, newOrigin(t, static("x", "max-age=600")), 1, nil)[0]
	if err := n.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, err := n.mesh.Peers().Fetch(t.Context(), "127.0.0.1:1", &peerv1.FetchRequest{Key: "k", Host: "h", PathQuery: "/"})
	if !errors.Is(err, peer.ErrPoolClosed) {
		t.Fatalf("a peer fetch after Shutdown: %v, want %v", err, peer.ErrPoolClosed)
	}
}
