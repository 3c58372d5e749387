package reqguard

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// serve runs h on a real listener wrapped by Listen and returns its
// address.
func serve(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ConnContext: ConnContext, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(Listen(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func TestAmbiguousFraming(t *testing.T) {
	addr := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if Faulty(r.Context()) != "" {
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	})
	smuggle := "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
		"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	if got := testutil.RawHTTP(t, addr, smuggle, 2); len(got) != 1 || got[0] != "400 Bad Request" {
		t.Errorf("CL+TE: %v; want one 400, then the connection closed", got)
	}
	// Either field alone, twice on one connection: both answered.
	plain := "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: x\r\ncontent-length: 3\r\n\r\nabc"
	if got := testutil.RawHTTP(t, addr, plain, 2); len(got) != 2 || got[0] != "200 OK" || got[1] != "200 OK" {
		t.Errorf("TE, then CL: %v", got)
	}
	// RFC 9112 §6.1 and §6.3 for HTTP/1.0 and 1.1: every framing but one
	// chunked Transfer-Encoding line (in 1.1) or a Content-Length alone is
	// 400, and the connection is closed, so the pipelined request after it
	// is never read.
	for _, tt := range []struct{ version, fields string }{
		{"1.0", "Transfer-Encoding: chunked\r\n"},
		{"1.0", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"},
		{"1.0", "Transfer-Encoding: identity\r\nContent-Length: 5\r\n"},
		{"1.0", "Transfer-Encoding: x-unknown\r\n"},
		{"1.0", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"},
		{"1.1", "Transfer-Encoding: identity\r\n"},
		{"1.1", "Transfer-Encoding: identity\r\nContent-Length: 5\r\n"},
		{"1.1", "Transfer-Encoding: x-unknown\r\n"},
		{"1.1", "Transfer-Encoding: gzip, chunked\r\n"},
		{"1.1", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"},
		{"1.1", "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"},
	} {
		raw := "POST /a HTTP/" + tt.version + "\r\nHost: x\r\nConnection: keep-alive\r\n" + tt.fields + "\r\n0\r\n\r\n" +
			"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
		if got := testutil.RawHTTP(t, addr, raw, 2); len(got) != 1 || got[0] != "400 Bad Request" {
			t.Errorf("HTTP/%s with %q: %v; want one 400, then the connection closed", tt.version, tt.fields, got)
		}
	}
	// A body that mentions the fields is no header section.
	body := "x-content-length: 1\r\ntransfer-encoding: chunked\r\n\r\n"
	inBody := "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
		fmt.Sprintf("%x\r\n", len(body)) + body + "\r\n0\r\n\r\n"
	if got := testutil.RawHTTP(t, addr, inBody, 1); len(got) != 1 || got[0] != "200 OK" {
		t.Errorf("fields in a body: %v", got)
	}
}

func TestBodyTimeout(t *testing.T) {
	errs := make(chan error, 1)
	addr := serve(t, func(w http.ResponseWriter, r *http.Request) {
		r = GuardBody(w, r, 300*time.Millisecond)
		_, err := io.Copy(io.Discard, r.Body)
		errs <- err
		if err != nil {
			w.WriteHeader(http.StatusRequestTimeout)
		}
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
	start := time.Now()
	for range 20 { // a byte every 100 ms: 2 s for the body, far over 0.3 s plus 1 s per 500 bytes
		if _, err := c.Write([]byte("a")); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
		if len(errs) > 0 {
			break
		}
	}
	select {
	case err := <-errs:
		if !errors.Is(err, ErrBodyTimeout) {
			t.Errorf("a trickled body: %v; want ErrBodyTimeout", err)
		}
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Errorf("the trickle was cut after %v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the trickle was never cut")
	}
}

func TestMalformedChunkedBody(t *testing.T) {
	errs := make(chan error, 1)
	addr := serve(t, func(w http.ResponseWriter, r *http.Request) {
		r = GuardBody(w, r, time.Second)
		_, err := io.Copy(io.Discard, r.Body)
		errs <- err
	})
	testutil.RawHTTP(t, addr, "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n", 1)
	if err := <-errs; !errors.Is(err, ErrBadBody) {
		t.Errorf("bare-LF chunks: %v; want ErrBadBody", err)
	}
}

// TestReadFromWithoutSendfile: a watched connection that cannot take a
// reader itself (a pipe, a TLS connection) still gets every byte.
func TestReadFromWithoutSendfile(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	got := make(chan []byte, 1)
	go func() { p, _ := io.ReadAll(b); got <- p }()
	c := Wrap(a)
	n, err := c.(io.ReaderFrom).ReadFrom(io.LimitReader(zeros{}, 100_000))
	a.Close()
	if err != nil || n != 100_000 {
		t.Fatalf("ReadFrom: %d, %v", n, err)
	}
	if p := <-got; len(p) != 100_000 {
		t.Errorf("the peer read %d bytes; want 100000", len(p))
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
