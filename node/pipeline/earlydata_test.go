package pipeline

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/node/earlydata"
)

// TestEarlyDataWaitsForHandshake: a request taken in TLS early data is
// answered from the cache at once, but a miss or a pass-through waits for
// the client's handshake before the origin hears of it, and gets 425 when
// the handshake fails.
func TestEarlyDataWaitsForHandshake(t *testing.T) {
	pl, hits := newPipeline(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/private") {
			w.Header().Set("Cache-Control", "private")
		} else {
			w.Header().Set("Cache-Control", "max-age=600")
		}
		_, _ = io.WriteString(w, "body")
	})
	get := func(ctx context.Context, path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		pl.ServeHTTP(rec, httptest.NewRequest("GET", "http://site.test"+path, nil).WithContext(ctx))
		return rec
	}
	for _, p := range []string{"/hit.css", "/private.css"} {
		if rec := get(context.Background(), p); rec.Code != 200 {
			t.Fatalf("%s: %d", p, rec.Code)
		}
	}
	origin := hits.Load()

	// early is a request context in early data whose handshake completes
	// when done is closed; entered is closed when the pipeline waits.
	early := func(done <-chan struct{}, fail bool) (context.Context, <-chan struct{}) {
		entered := make(chan struct{})
		return earlydata.With(context.Background(), func(ctx context.Context) error {
			close(entered)
			select {
			case <-done:
				if fail {
					return earlydata.ErrHandshake
				}
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}), entered
	}

	// A hit: answered with the handshake still under way.
	ctx, entered := early(nil, false)
	if rec := get(ctx, "/hit.css"); rec.Code != 200 || rec.Body.String() != "body" {
		t.Fatalf("an early hit: %d %q", rec.Code, rec.Body.String())
	}
	select {
	case <-entered:
		t.Error("an early hit waited for the handshake")
	default:
	}

	// A miss and a pass-through: nothing reaches the origin until the
	// handshake completes.
	for _, p := range []string{"/cold.css", "/private.css"} {
		done := make(chan struct{})
		ctx, entered := early(done, false)
		answered := make(chan *httptest.ResponseRecorder, 1)
		go func() { answered <- get(ctx, p) }()
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s in early data: the pipeline did not wait for the handshake", p)
		}
		if n := hits.Load(); n != origin {
			t.Fatalf("%s in early data: the origin heard of it before the handshake", p)
		}
		close(done)
		var rec *httptest.ResponseRecorder
		select {
		case rec = <-answered:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no answer 10 s after the handshake", p)
		}
		if rec.Code != 200 || hits.Load() != origin+1 {
			t.Fatalf("%s after the handshake: %d, %d origin requests; want 200 and one", p, rec.Code, hits.Load()-origin)
		}
		origin++
	}

	// A handshake that fails: 425, and the origin hears nothing.
	done := make(chan struct{})
	close(done)
	ctx, _ = early(done, true)
	rec := get(ctx, "/never.css")
	if rec.Code != http.StatusTooEarly || hits.Load() != origin {
		t.Errorf("a failed handshake: %d, %d origin requests; want 425 and none", rec.Code, hits.Load()-origin)
	}
	if !strings.Contains(rec.Body.String(), earlydata.ErrHandshake.Error()) {
		t.Errorf("425 body %q; want it to say why", rec.Body.String())
	}
}
