package h3

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/node/earlydata"
)

// TestTooEarly: in 0-RTT early data (the handshake not yet complete) a
// method other than GET and HEAD gets 425 Too Early; once the handshake is
// complete, every method goes through. (A quic-go client sends only GET in
// early data, so these requests are made up.)
func TestTooEarly(t *testing.T) {
	h := tooEarly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	for _, c := range []struct {
		method   string
		complete bool
		want     int
	}{
		{http.MethodPost, false, http.StatusTooEarly},
		{http.MethodDelete, false, http.StatusTooEarly},
		{http.MethodGet, false, http.StatusTooEarly}, // no QUIC connection to wait for
		{http.MethodPost, true, http.StatusNoContent},
		{http.MethodGet, true, http.StatusNoContent},
	} {
		r := httptest.NewRequest(c.method, "https://shop.example/x", nil)
		r.TLS = &tls.ConnectionState{HandshakeComplete: c.complete}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("%s, handshake complete %v: %d; want %d", c.method, c.complete, w.Code, c.want)
		}
	}
}

// TestEarlyGETWaitsForHandshake: a GET a real client sends in 0-RTT early
// data reaches the handler marked as early, and its wait returns once the
// handshake completes; a GET after the handshake is not marked.
func TestEarlyGETWaitsForHandshake(t *testing.T) {
	if raceEnabled {
		// quic-go's client reads the server's transport parameters while
		// its handshake writes them when it sends in 0-RTT
		// (quic-go/quic-go#4303): make test runs this test without the
		// race detector.
		t.Skip("a 0-RTT client races with itself under the race detector")
	}
	cert := testutil.WriteCert(t, t.TempDir(), "shop", []string{"shop.example"}, testutil.CertOptions{})
	kp, err := tls.LoadX509KeyPair(cert.CertFile, cert.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{TLS: &tls.Config{Certificates: []tls.Certificate{kp}}, ZeroRTT: true, IdleTimeout: time.Minute,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			early := earlydata.In(r.Context())
			ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
			defer cancel()
			if err := earlydata.Wait(ctx); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			if early {
				_, _ = io.WriteString(w, "early")
				return
			}
			_, _ = io.WriteString(w, "late")
		})})
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	tc := &tls.Config{RootCAs: cert.Pool, ServerName: "shop.example", ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	get := func(method string) (string, bool) {
		var conn *quic.Conn
		tr := &http3.Transport{TLSClientConfig: tc, Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			c, err := quic.DialAddrEarly(ctx, s.Addr().String(), tc, qc)
			conn = c
			return c, err
		}}
		defer tr.Close()
		req, _ := http.NewRequest(method, "https://shop.example/x", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", method, resp.StatusCode, b)
		}
		// The answer to an early request may come before the handshake
		// is over; the connection's state is read after it.
		select {
		case <-conn.HandshakeComplete():
		case <-time.After(10 * time.Second):
			t.Fatal("the handshake did not complete in 10 s")
		}
		return string(b), conn.ConnectionState().Used0RTT
	}
	if body, _ := get(http.MethodGet); body != "late" {
		t.Errorf("a GET after a full handshake: %q; want it not marked early", body)
	}
	// The session ticket may come after the first answer, and the server
	// may read a request sent in early data after the handshake: a few
	// tries.
	var body string
	var used bool
	for range 10 {
		if body, used = get(http3.MethodGet0RTT); used && body == "early" {
			break
		}
	}
	if !used || body != "early" {
		t.Errorf("a resumed GET in 0-RTT (used: %v): %q; want it marked early and its wait over", used, body)
	}
}
