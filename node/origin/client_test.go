package origin

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// send is one request through ts to the server at base.
func send(t *testing.T, ts *Transports, ctx context.Context, method, base, path string, body io.Reader) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	return ts.RoundTrip(req)
}

// TestTransportStreams: a response body is read as the origin sends it
// (the first part before the origin has written the rest), and a request
// body reaches the origin as the client sends it, never buffered whole:
// the origin answers after the first part while the rest is still to come.
func TestTransportStreams(t *testing.T) {
	more := make(chan struct{})
	got := make(chan string, 1)
	o := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			buf := make([]byte, 5)
			_, _ = io.ReadFull(r.Body, buf)
			got <- string(buf)
			rest, _ := io.ReadAll(r.Body)
			_, _ = fmt.Fprintf(w, "%s+%s", buf, rest)
			return
		}
		_, _ = io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		<-more
		_, _ = io.WriteString(w, "-last")
	})
	ts := NewTransports(Config{})
	t.Cleanup(ts.CloseIdleConnections)

	resp, err := send(t, ts, t.Context(), "GET", o.URL, "/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("first part: %q %v", buf, err)
	}
	close(more)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "-last" {
		t.Fatalf("rest: %q %v", rest, err)
	}
	_ = resp.Body.Close()

	for _, size := range []int64{-1, 10} { // chunked, and with a Content-Length
		pr, pw := io.Pipe()
		req, _ := http.NewRequestWithContext(t.Context(), "POST", o.URL+"/upload", pr)
		req.ContentLength = size
		done := make(chan *http.Response, 1)
		go func() {
			resp, err := ts.RoundTrip(req)
			if err != nil {
				t.Error(err)
			}
			done <- resp
		}()
		_, _ = io.WriteString(pw, "hello")
		select {
		case first := <-got:
			if first != "hello" {
				t.Errorf("size %d: the origin read %q first", size, first)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("size %d: the origin never saw the first part of an unfinished body", size)
		}
		_, _ = io.WriteString(pw, "world")
		_ = pw.Close()
		resp := <-done
		if resp == nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if string(b) != "hello+world" {
			t.Errorf("size %d: origin answered %q", size, b)
		}
	}
}

// TestTransportKeepAlive: sequential requests share one connection, also
// after a response whose body was read to the end; a HEAD answer keeps its
// Content-Length; an origin that closed the idle connection meanwhile
// costs a new connection, not an error.
func TestTransportKeepAlive(t *testing.T) {
	var conns atomic.Int64
	o := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2")
		_, _ = io.WriteString(w, "ok")
	}))
	o.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	o.Start()
	t.Cleanup(o.Close)
	ts := NewTransports(Config{})
	t.Cleanup(ts.CloseIdleConnections)
	for i := range 5 {
		resp, err := send(t, ts, t.Context(), "GET", o.URL, "/a", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if string(b) != "ok" {
			t.Fatalf("request %d: %q", i, b)
		}
	}
	resp, err := send(t, ts, t.Context(), "HEAD", o.URL, "/a", nil)
	if err != nil || resp.ContentLength != 2 {
		t.Fatalf("HEAD: %v %v", resp, err)
	}
	_ = resp.Body.Close()
	if c := conns.Load(); c != 1 {
		t.Errorf("%d connections for six requests; want 1", c)
	}
	o.CloseClientConnections() // as an origin's keep-alive timeout does
	resp, err = send(t, ts, t.Context(), "GET", o.URL, "/a", nil)
	if err != nil {
		t.Fatalf("after the origin closed the idle connection: %v", err)
	}
	_ = resp.Body.Close()
}

// TestTransportTimeouts: an origin that sends no header within the header
// timeout fails with a net.Error whose Timeout is true; the end of a
// request's context stops a body read in progress at once, with the
// context's error.
func TestTransportTimeouts(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	o := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/silent" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		_, _ = io.WriteString(w, "part")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	ts := NewTransports(Config{HeaderTimeout: 200 * time.Millisecond})
	t.Cleanup(ts.CloseIdleConnections)
	_, err := send(t, ts, t.Context(), "GET", o.URL, "/silent", nil)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("silent origin: %v; want a timeout", err)
	}

	// Waiting for the header, the context's end stops the wait at once.
	wctx, wcancel := context.WithCancelCause(t.Context())
	gone := errors.New("client gone")
	time.AfterFunc(20*time.Millisecond, func() { wcancel(gone) })
	slow := NewTransports(Config{HeaderTimeout: time.Minute})
	t.Cleanup(slow.CloseIdleConnections)
	if _, err := send(t, slow, wctx, "GET", o.URL, "/silent", nil); !errors.Is(err, gone) {
		t.Errorf("cancelled while waiting for the header: %v; want the context's cause", err)
	}

	ctx, cancel := context.WithCancelCause(t.Context())
	resp, err := send(t, ts, ctx, "GET", o.URL, "/hang", nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("fill cancelled")
	read := make(chan error, 1)
	go func() {
		_, err := resp.Body.Read(buf)
		read <- err
	}()
	cancel(stop)
	select {
	case err := <-read:
		if !errors.Is(err, stop) {
			t.Errorf("read after cancel: %v; want the context's cause", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a body read outlived its context")
	}
	_ = resp.Body.Close()
}

// TestTransportServerNames: https connections present the server name
// asked for and verify the origin's certificate against it; a connection
// verified for one name is never used for another, and a name the
// certificate does not cover fails.
func TestTransportServerNames(t *testing.T) {
	dir := t.TempDir()
	cert := testutil.WriteCert(t, dir, "o", []string{"a.test", "b.test"}, testutil.CertOptions{})
	pair, err := tls.LoadX509KeyPair(cert.CertFile, cert.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	names := map[string]int{} // server name → connections
	o := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.TLS.ServerName)
	}))
	o.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		mu.Lock()
		names[h.ServerName]++
		mu.Unlock()
		return nil, nil
	}}
	o.StartTLS()
	t.Cleanup(o.Close)
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	ts := NewTransports(Config{RootCAs: roots})
	t.Cleanup(ts.CloseIdleConnections)
	u, _ := url.Parse(o.URL)
	for _, name := range []string{"a.test", "b.test", "a.test", "b.test", "nobody.test"} {
		ctx := WithServerName(t.Context(), name)
		resp, err := send(t, ts, ctx, "GET", "https://"+u.Host, "/", nil)
		if name == "nobody.test" {
			if err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("%s: %v; want a certificate error", name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if string(b) != name {
			t.Errorf("asked for %s, the origin saw %q", name, b)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if names["a.test"] != 1 || names["b.test"] != 1 {
		t.Errorf("handshakes by name: %v; want one connection per name", names)
	}
}

// TestTransportFraming: what goes to the origin is the request as given:
// the target unnormalised, the Host, each field line; an origin's trailer
// arrives once the body is read.
func TestTransportFraming(t *testing.T) {
	addr, seen := rawOrigin(t, "HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 42\r\n\r\n")
	ts := NewTransports(Config{})
	t.Cleanup(ts.CloseIdleConnections)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+addr+"/a/%2e%2e/b%2Fc?q=1&&r", nil)
	req.Host = "site.test"
	req.Header["X-Two"] = []string{"1", "2"}
	req.Header["User-Agent"] = []string{""}
	resp, err := ts.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	head := <-seen
	for _, want := range []string{"GET /a/%2e%2e/b%2Fc?q=1&&r HTTP/1.1\r\n", "Host: site.test\r\n", "X-Two: 1\r\n", "X-Two: 2\r\n"} {
		if !strings.Contains(head, want) {
			t.Errorf("request %q lacks %q", head, want)
		}
	}
	if strings.Contains(strings.ToLower(head), "user-agent") {
		t.Errorf("request %q has a User-Agent; none was asked for", head)
	}
	if string(b) != "ok" || resp.Trailer.Get("X-Sum") != "42" {
		t.Errorf("body %q, trailer %v", b, resp.Trailer)
	}
}

// failingBody sends a few bytes, then fails as a client's broken body does.
type failingBody struct{ sent bool }

func (b *failingBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return copy(p, "abc"), nil
	}
	return 0, errors.New("malformed chunk")
}

// TestTransportBodyFails: a request body that fails while the origin waits
// for the rest of it ends the exchange at once (not after the header
// timeout) with ErrRequestBody, which a pool does not count against the
// origin.
func TestTransportBodyFails(t *testing.T) {
	o := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	})
	ts := NewTransports(Config{HeaderTimeout: time.Minute})
	t.Cleanup(ts.CloseIdleConnections)
	for _, size := range []int64{-1, 100} {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", o.URL+"/up", io.NopCloser(&failingBody{}))
		req.ContentLength = size
		start := time.Now()
		_, err := ts.RoundTrip(req)
		if !errors.Is(err, ErrRequestBody) || time.Since(start) > 10*time.Second {
			t.Errorf("size %d: %v after %v; want ErrRequestBody at once", size, err, time.Since(start))
		}
	}
	p := newPool(t, PoolConfig{Targets: []*Target{o.target(1)}, MaxFails: 1})
	req, _ := http.NewRequestWithContext(t.Context(), "POST", "/up", io.NopCloser(&failingBody{}))
	if _, err := p.RoundTrip(req); !errors.Is(err, ErrRequestBody) {
		t.Fatalf("through the pool: %v", err)
	}
	if !p.cfg.Targets[0].Up(time.Now()) {
		t.Error("a client's broken body ejected the origin")
	}
}

// A response's fields reach the pipeline under net/http's canonical names,
// however the origin spells them (nginx sends "ETag"), each with its own
// values.
func TestTransportFieldNames(t *testing.T) {
	addr, _ := rawOrigin(t, "HTTP/1.1 200 OK\r\nETag: \"v1\"\r\ncontent-type: text/plain\r\nX-FOO-bar: 1\r\n"+
		"Set-Cookie: a=1\r\nWWW-Authenticate: Basic\r\nSet-Cookie: b=2\r\nVary: Accept\r\nContent-Length: 2\r\n\r\nok")
	ts := NewTransports(Config{})
	t.Cleanup(ts.CloseIdleConnections)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+addr+"/", nil)
	resp, err := ts.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	DrainClose(resp.Body)
	h := resp.Header
	if h.Get("ETag") != `"v1"` || h.Get("Content-Type") != "text/plain" || h.Get("X-Foo-Bar") != "1" ||
		h.Get("Www-Authenticate") != "Basic" || len(h.Values("Set-Cookie")) != 2 {
		t.Fatalf("fields %v; want them under canonical names", h)
	}
	h.Add("Vary", "Accept-Encoding") // must not write over another field's value
	if h.Get("Www-Authenticate") != "Basic" || len(h.Values("Vary")) != 2 || h.Get("Content-Length") != "2" {
		t.Fatalf("fields after an Add: %v", h)
	}
}

// rawOrigin answers one request on a connection of its own with response,
// written as is, and passes the request's head (its lines up to the blank
// one) on to heads.
func rawOrigin(t *testing.T, response string) (addr string, heads <-chan string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 1)
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		var head strings.Builder
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(l)
			if l == "\r\n" {
				break
			}
		}
		seen <- head.String()
		_, _ = io.WriteString(c, response)
	}()
	return ln.Addr().String(), seen
}
