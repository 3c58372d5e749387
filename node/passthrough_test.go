package node

import (
	"bufio"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/node/site"
)

// TestBypassStreams: a dynamic response of unknown length (an event stream,
// a long poll) reaches the client as the origin writes it: the first event
// arrives before the origin sends the second, which it holds until the
// client has the first.
func TestBypassStreams(t *testing.T) {
	got := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			return // the client never saw the first event: the test fails below
		}
		_, _ = io.WriteString(w, "data: two\n\n")
	})
	n := startNode(t, nil, Config{Sites: []site.Config{{Hosts: []string{"app.example"}, Origins: []site.OriginConfig{{URL: o.url(t).String()}},
		Rules: []site.RuleConfig{{PathPrefix: "/api/", Action: "bypass"}}}}})
	req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+n.HTTPAddr()+"/api/events", nil)
	req.Host = "app.example"
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if cs := resp.Header.Get("Cache-Status"); cs != "meshcdn; fwd=bypass" {
		t.Errorf("Cache-Status %q; want a bypass", cs)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("first event: %q %v", line, err)
	}
	close(got)
	rest, _ := io.ReadAll(br)
	if string(rest) != "\ndata: two\n\n" {
		t.Errorf("the rest: %q", rest)
	}
}

// BenchmarkPassThrough is an uncacheable 1 KiB response through the edge's
// bypass proxy to an origin on loopback (keep-alive), in process.
func BenchmarkPassThrough(b *testing.B) {
	body := make([]byte, 1<<10)
	o := newOrigin(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Length", "1024")
		_, _ = w.Write(body)
	})
	n := startNode(b, nil, Config{Logger: slog.New(slog.DiscardHandler), Sites: []site.Config{{Hosts: []string{"app.example"},
		Origins: []site.OriginConfig{{URL: o.url(b).String()}}, Rules: []site.RuleConfig{{PathPrefix: "/api/", Action: "bypass"}}}}})
	req := httptest.NewRequest("GET", "http://app.example/api/x", nil)
	w := &discard{h: http.Header{}}
	n.ServeHTTP(w, req)
	if w.n != 1024 {
		b.Fatalf("%d bytes: %v", w.n, w.h)
	}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		n.ServeHTTP(w, req)
	}
}
