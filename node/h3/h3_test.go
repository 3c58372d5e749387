package h3

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestTooEarly: in 0-RTT early data (the handshake not yet complete) GET and
// HEAD go through and any other method gets 425 Too Early; once the
// handshake is complete, every method goes through.
func TestTooEarly(t *testing.T) {
	h := tooEarly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	for _, c := range []struct {
		method   string
		complete bool
		want     int
	}{
		{http.MethodGet, false, http.StatusNoContent},
		{http.MethodHead, false, http.StatusNoContent},
		{http.MethodPost, false, http.StatusTooEarly},
		{http.MethodDelete, false, http.StatusTooEarly},
		{http.MethodPost, true, http.StatusNoContent},
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
