package reqguard

import (
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// serve runs h on a real listener and returns its address.
func serve(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
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
