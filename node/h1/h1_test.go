package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// detacher is the pipeline's Detacher, as the front's writer offers it.
type detacher interface {
	Detach(rest func(http.ResponseWriter))
}

// start serves h with a front on loopback and returns its address.
func start(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Handler: h, Logger: slog.New(slog.DiscardHandler), HeaderTimeout: 5 * time.Second})
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}

// TestAnswerFromMemory: an answer written while the handler runs goes out
// whole with its length; HEAD keeps the length and sends no body;
// pipelined requests are answered in order on one connection; the
// request the handler sees is the one sent.
func TestAnswerFromMemory(t *testing.T) {
	addr := start(t, func(w http.ResponseWriter, r *http.Request) {
		body := fmt.Sprintf("%s %s path=%q raw=%q query=%q host=%s via=%q", r.Method, r.Proto, r.URL.Path,
			r.URL.RawPath, r.URL.RawQuery, r.Host, r.Header.Values("Via"))
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Header().Add("X-Two", "1")
		w.Header().Add("X-Two", "2")
		_, _ = io.WriteString(w, body)
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /a%2Fb/c?x=1&&y HTTP/1.1\r\nHost: site.test\r\nVia: 1.1 a\r\nVia: 1.1 b\r\n\r\nHEAD /h HTTP/1.1\r\nHost: site.test\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	want := `GET HTTP/1.1 path="/a/b/c" raw="/a%2Fb/c" query="x=1&&y" host=site.test via=["1.1 a" "1.1 b"]`
	if string(b) != want || resp.ContentLength != int64(len(want)) || strings.Join(resp.Header.Values("X-Two"), ",") != "1,2" {
		t.Errorf("GET: %q (length %d, X-Two %v); want %q", b, resp.ContentLength, resp.Header.Values("X-Two"), want)
	}
	resp, err = http.ReadResponse(br, &http.Request{Method: "HEAD"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ContentLength <= 0 {
		t.Errorf("HEAD: Content-Length %d; want the GET's", resp.ContentLength)
	}
}

// TestDetachedStreams: a detached answer streams: its first part reaches
// the client while the rest is still to come, with the Content-Length it
// set (chunked without one); a short one goes out whole.
func TestDetachedStreams(t *testing.T) {
	more := make(chan struct{})
	addr := start(t, func(w http.ResponseWriter, r *http.Request) {
		w.(detacher).Detach(func(w http.ResponseWriter) {
			if r.URL.Path == "/short" {
				_, _ = io.WriteString(w, "short")
				return
			}
			if r.URL.Path == "/sized" {
				w.Header().Set("Content-Length", "10")
			}
			_, _ = io.WriteString(w, "first")
			w.(http.Flusher).Flush()
			<-more
			_, _ = io.WriteString(w, "-last")
		})
	})
	resp, err := http.Get("http://" + addr + "/short")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "short" || resp.ContentLength != 5 {
		t.Errorf("short: %q, length %d", b, resp.ContentLength)
	}
	for _, path := range []string{"/sized", "/chunked"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
			t.Fatalf("%s: first part %q, %v", path, buf, err)
		}
		if path == "/sized" && resp.ContentLength != 10 || path == "/chunked" && resp.ContentLength != -1 {
			t.Errorf("%s: Content-Length %d", path, resp.ContentLength)
		}
		more <- struct{}{}
		rest, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(rest) != "-last" {
			t.Errorf("%s: rest %q, %v", path, rest, err)
		}
	}
}

// TestDetachedAbort: a detached answer that aborts midway reaches the
// client cut short, never as complete; one that aborts before sending
// anything closes the connection without an answer.
func TestDetachedAbort(t *testing.T) {
	addr := start(t, func(w http.ResponseWriter, r *http.Request) {
		w.(detacher).Detach(func(w http.ResponseWriter) {
			if r.URL.Path == "/midway" {
				w.Header().Set("Content-Length", "100")
				_, _ = io.WriteString(w, "part")
				w.(http.Flusher).Flush()
			}
			panic(http.ErrAbortHandler)
		})
	})
	resp, err := http.Get("http://" + addr + "/midway")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || string(b) != "part" {
		t.Errorf("midway: %q, %v; want the part and an error", b, err)
	}
	if _, err := http.Get("http://" + addr + "/before"); err == nil {
		t.Error("an answer aborted before it started reached the client")
	}
}

// TestFaultyFraming: what request smuggling sends is answered 400 and the
// connection closed, so nothing behind it is served: both Content-Length
// and Transfer-Encoding, a coding other than chunked, two codings, and a
// Transfer-Encoding in HTTP/1.0. A header section beyond the limit is 431.
func TestFaultyFraming(t *testing.T) {
	addr := start(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.ReadAll(r.Body) })
	for _, raw := range []string{
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	} {
		if got := testutil.RawHTTP(t, addr, raw+"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 2); len(got) != 1 || got[0] != "400 Bad Request" {
			t.Errorf("%q: %v; want 400 and the connection closed", raw, got)
		}
	}
	big := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n"
	if got := testutil.RawHTTP(t, addr, big, 1); len(got) != 1 || got[0] != "431 Request Header Fields Too Large" {
		t.Errorf("70 KiB of header fields: %v; want 431", got)
	}
}

// TestSniff: on one cleartext listener, a connection that opens with
// HTTP/2's preface reaches the h2c server, any other the HTTP/1.1 front.
func TestSniff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sn := NewSniff(ln, 500*time.Millisecond, nil)
	go sn.Run()
	h2 := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, r.Proto) })}
	h2.Protocols = new(http.Protocols)
	h2.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = h2.Serve(sn.H2()) }()
	front := New(Config{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, r.Proto) }),
		Logger: slog.New(slog.DiscardHandler)})
	go func() { _ = front.Serve(sn.H1()) }()
	t.Cleanup(func() {
		_ = sn.Close()
		_ = front.Shutdown(context.Background())
		_ = h2.Close()
	})
	h2c := &http.Client{Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}}
	for _, tc := range []struct {
		c    *http.Client
		want string
	}{{http.DefaultClient, "HTTP/1.1"}, {h2c, "HTTP/2.0"}} {
		resp, err := tc.c.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != tc.want {
			t.Errorf("served as %q; want %q", b, tc.want)
		}
	}
	// A connection that sends nothing is closed once the timeout passes.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("a silent connection: %v; want it closed", err)
	}
}

// TestSniffPeeks: an HTTP/1 connection whose start tells it apart reaches
// H1 as the TCP connection itself (given to bare), its bytes unread, so
// fasthttp can send a response with one writev; a connection the sniffer
// cannot peek at is read and replayed.
func TestSniffPeeks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bared := make(chan net.Conn, 1)
	sn := NewSniff(ln, 5*time.Second, func(c net.Conn) net.Conn { bared <- c; return c })
	go sn.Run()
	t.Cleanup(func() {
		_ = sn.Close()
		_ = sn.H1().Close()
		_ = sn.H2().Close()
	})
	dial := func() net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	accept := func(l net.Listener) net.Conn {
		t.Helper()
		type accepted struct {
			c   net.Conn
			err error
		}
		ch := make(chan accepted, 1)
		go func() { c, err := l.Accept(); ch <- accepted{c, err} }()
		select {
		case a := <-ch:
			if a.err != nil {
				t.Fatal(a.err)
			}
			return a.c
		case <-time.After(10 * time.Second):
			t.Fatal("no connection handed on within 10 s")
			return nil
		}
	}
	read := func(c net.Conn, n int) string {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, n)
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	const req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	c := dial()
	_, _ = io.WriteString(c, req)
	got := accept(sn.H1())
	if _, ok := got.(*net.TCPConn); !ok {
		t.Errorf("H1 got a %T; want the TCP connection", got)
	}
	select {
	case b := <-bared:
		if b != got {
			t.Error("H1 got another connection than bare's")
		}
	default:
		t.Error("bare was not asked")
	}
	if s := read(got, len(req)); s != req {
		t.Errorf("H1 read %q; want the request whole", s)
	}

	// A connection that cannot be peeked at (a pipe) is read, in as many
	// pieces as it comes, and replayed.
	client, server := net.Pipe()
	t.Cleanup(func() { client.Close() })
	go sn.sniff(server)
	_ = client.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(client, string(preface[:10]))
	go func() { _, _ = io.WriteString(client, string(preface[10:])+"rest") }()
	got = accept(sn.H2())
	if s := read(got, len(preface)+4); s != string(preface)+"rest" {
		t.Errorf("H2 read %q; want the preface replayed", s)
	}
}
