package node

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/internal/units"
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

// TestWebSocketPassThrough: WebSocket connections (an HTTP/1.1 Upgrade)
// pass through the edge to the origin as dynamic requests, over HTTP and
// over HTTPS to a site with HSTS: six at once, each echoing messages both
// ways while they stay open, every one counted against the connection
// limits.
func TestWebSocketPassThrough(t *testing.T) {
	origin := httptest.NewServer(websocket.Handler(func(ws *websocket.Conn) {
		_, _ = io.Copy(ws, ws) // echo
	}))
	t.Cleanup(origin.Close)
	ou, _ := url.Parse(origin.URL)
	cert := testutil.WriteCert(t, t.TempDir(), "ws", []string{"ws.example"}, testutil.CertOptions{})
	n := startNode(t, nil, Config{Origins: []*url.URL{ou}, HTTPSAddr: "127.0.0.1:0", TLSCertFile: cert.CertFile, TLSKeyFile: cert.KeyFile,
		Sites: []site.Config{{Hosts: []string{"ws.example"}, Origins: []site.OriginConfig{{URL: origin.URL}},
			HSTS: &site.HSTSConfig{MaxAge: units.Duration(24 * time.Hour)}}}})
	var conns []*websocket.Conn
	for i := range 5 {
		cfg, err := websocket.NewConfig("ws://"+n.HTTPAddr()+"/chat", "http://www.example.test/")
		if err != nil {
			t.Fatal(err)
		}
		ws, err := websocket.DialConfig(cfg)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { ws.Close() })
		conns = append(conns, ws)
	}
	tc, err := tls.Dial("tcp", n.HTTPSAddr(), &tls.Config{RootCAs: cert.Pool, ServerName: "ws.example", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := websocket.NewConfig("wss://ws.example/chat", "https://ws.example/")
	if err != nil {
		t.Fatal(err)
	}
	wss, err := websocket.NewClient(cfg, tc)
	if err != nil {
		t.Fatalf("over HTTPS: %v", err)
	}
	t.Cleanup(func() { wss.Close() })
	conns = append(conns, wss)
	for round := range 2 {
		for i, ws := range conns {
			_ = ws.SetDeadline(time.Now().Add(10 * time.Second))
			msg := fmt.Sprintf("message %d from client %d", round, i)
			if err := websocket.Message.Send(ws, msg); err != nil {
				t.Fatalf("client %d sending: %v", i, err)
			}
			var got string
			if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
				t.Fatalf("client %d: echo %q (%v); want %q", i, got, err, msg)
			}
		}
	}
	if open := n.conns.Open(); open != len(conns) {
		t.Errorf("%d client connections counted; want the %d upgraded ones", open, len(conns))
	}
	// Closed, they leave the count: none stays held against the limits.
	for _, ws := range conns {
		_ = ws.Close()
	}
	eventually(t, 10*time.Second, func() bool { return n.conns.Open() == 0 })
}

// TestPassThroughBodies: a pass-through's body, which the HTTP/1.1 front
// sends after its handler returned, arrives whole and is counted once sent;
// one the origin cuts short never looks whole to the client; a client that
// leaves midway ends the origin's transfer, and its request.
func TestPassThroughBodies(t *testing.T) {
	const size = 1 << 20
	body := make([]byte, size)
	originGone := make(chan error, 1)
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		switch r.URL.Path {
		case "/api/whole":
			_, _ = w.Write(body)
		case "/api/cut":
			w.Header().Set("Content-Length", fmt.Sprint(size))
			_, _ = w.Write(body[:size/2]) // and the handler ends: net/http closes the connection
		case "/api/endless":
			for {
				if _, err := w.Write(body[:32<<10]); err != nil {
					originGone <- err
					return
				}
			}
		}
	})
	n := startNode(t, nil, Config{Sites: []site.Config{{Hosts: []string{"app.example"}, Origins: []site.OriginConfig{{URL: o.url(t).String()}},
		Rules: []site.RuleConfig{{PathPrefix: "/api/", Action: "bypass"}}}}})
	get := func(path string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+n.HTTPAddr()+path, nil)
		req.Host = "app.example"
		return http.DefaultTransport.RoundTrip(req)
	}

	_, before, _, _ := n.pl.Totals()
	resp, err := get("/api/whole")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || len(got) != size {
		t.Fatalf("whole: %d bytes, %v", len(got), err)
	}
	eventually(t, 10*time.Second, func() bool {
		_, after, _, _ := n.pl.Totals()
		return after["bypass"]-before["bypass"] == size
	})

	resp, err = get("/api/cut")
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err == nil {
		t.Fatalf("cut short by the origin: %d bytes and no error; want the client's read to fail", len(got))
	}

	resp, err = get("/api/endless")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 256<<10)); err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close() // the client leaves
	select {
	case <-originGone:
	case <-time.After(10 * time.Second):
		t.Fatal("the origin still sends 10s after the client left")
	}
	eventually(t, 10*time.Second, func() bool { return n.pl.Inflight() == 0 })
}

// TestPassThroughFields: what a pass-through sends on, both ways, as a
// reverse proxy must (RFC 9110 §7.6), also for an HTTP/1.0 client that
// names fields in its Connection: the origin gets the normalised target
// and Host over HTTP/1.1, the client's address appended to
// X-Forwarded-For, no hop-by-hop field and no Forwarded; the client gets
// the origin's Via and Cache-Status with this hop's after them,
// and neither the origin's hop-by-hop fields nor the targeted field the
// edge answers to. A HEAD keeps the origin's Content-Length.
func TestPassThroughFields(t *testing.T) {
	type seen struct {
		host, uri, proto string
		close            bool
		h                http.Header
	}
	got := make(chan seen, 2)
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Host, r.RequestURI, r.Proto, r.Close, r.Header.Clone()}
		h := w.Header()
		h.Set("Cache-Status", "origin-cache; hit")
		h.Set("Via", "1.1 origin-proxy")
		h.Set("Connection", "X-Bar")
		h.Set("X-Bar", "hidden")
		h.Set("Keep-Alive", "timeout=5")
		h.Set("Cdn-Cache-Control", "max-age=60")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Length", "5")
		_, _ = io.WriteString(w, "hello")
	})
	n := startNode(t, nil, Config{Sites: []site.Config{{Hosts: []string{"app.example"}, Origins: []site.OriginConfig{{URL: o.url(t).String()}},
		Rules: []site.RuleConfig{{PathPrefix: "/api/", Action: "bypass"}}}}})
	resp, b := testutil.RawResponse(t, n.HTTPAddr(), "GET /api/a/../b?q=1 HTTP/1.0\r\nHost: APP.example:80\r\nX-Forwarded-For: 10.0.0.1\r\n"+
		"Forwarded: for=192.0.2.1\r\nConnection: X-Foo\r\nX-Foo: secret\r\nProxy-Authorization: Basic eA==\r\n\r\n", "GET")
	s := <-got
	if s.host != "app.example" || s.uri != "/api/b?q=1" || s.proto != "HTTP/1.1" || s.close {
		t.Errorf("the origin got Host %q, target %q, %s (close %v); want app.example, /api/b?q=1, HTTP/1.1 kept alive", s.host, s.uri, s.proto, s.close)
	}
	if v := s.h.Get("X-Forwarded-For"); v != "10.0.0.1, 127.0.0.1" {
		t.Errorf("X-Forwarded-For %q; want the client's list with its address appended", v)
	}
	if s.h.Get("X-Forwarded-Host") != "app.example" || s.h.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("X-Forwarded-Host %q, X-Forwarded-Proto %q", s.h.Get("X-Forwarded-Host"), s.h.Get("X-Forwarded-Proto"))
	}
	for _, f := range []string{"Forwarded", "X-Foo", "Proxy-Authorization", "Connection"} {
		if v, ok := s.h[f]; ok {
			t.Errorf("the origin got %s: %q", f, v)
		}
	}
	h := resp.Header
	if resp.StatusCode != http.StatusOK || string(b) != "hello" {
		t.Fatalf("answer %d %q", resp.StatusCode, b)
	}
	if h.Get("Via") != "1.1 origin-proxy, 1.1 meshcdn" || h.Get("Age") != "0" {
		t.Errorf("Via %q, Age %q; want the origin's Via and this hop's, Age 0", h.Get("Via"), h.Get("Age"))
	}
	if cs := h.Values("Cache-Status"); len(cs) != 2 || cs[0] != "origin-cache; hit" || !strings.HasPrefix(cs[1], "meshcdn; fwd=bypass") {
		t.Errorf("Cache-Status %q; want the origin's, then this cache's", cs)
	}
	for _, f := range []string{"X-Bar", "Keep-Alive", "Cdn-Cache-Control"} {
		if v, ok := h[f]; ok {
			t.Errorf("the client got %s: %q", f, v)
		}
	}

	resp, b = testutil.RawResponse(t, n.HTTPAddr(), "HEAD /api/c HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n", "HEAD")
	<-got
	if resp.StatusCode != http.StatusOK || resp.ContentLength != 5 || len(b) != 0 {
		t.Errorf("HEAD: %d, Content-Length %d, %d bytes of body; want 200 with the origin's length and no body", resp.StatusCode, resp.ContentLength, len(b))
	}
}
