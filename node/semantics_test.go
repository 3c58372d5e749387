package node

import (
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/node/site"
)

// TestUnsafeMethodsInvalidate: POST, PUT, DELETE and PATCH go to the origin with
// their bodies, are never stored, and invalidate the target URI (RFC 9111 §4.4).
func TestUnsafeMethodsInvalidate(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+" "+string(b))
		mu.Unlock()
		if r.Method != http.MethodGet {
			w.Header().Set("Cache-Control", "max-age=600") // must not be stored anyway
			_, _ = w.Write([]byte("done " + r.Method))
			return
		}
		static("v", "max-age=600")(w, r)
	})
	n := startNode(t, o, Config{})
	for _, method := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		do(t, n, "GET", "/doc.css")
		wantStatus(t, do(t, n, "GET", "/doc.css"), "meshcdn; hit")
		r := do(t, n, method, "/doc.css")
		if r.body != "done "+method {
			t.Errorf("%s answered %q", method, r.body)
		}
		wantStatus(t, r, "meshcdn; fwd=method")
		wantStatus(t, do(t, n, "GET", "/doc.css"), "meshcdn; fwd=uri-miss")
		wantStatus(t, do(t, n, method, "/doc.css"), "meshcdn; fwd=method") // never stored
	}
	mu.Lock()
	defer mu.Unlock()
	if !contains(seen, "POST /doc.css payload") || !contains(seen, "PUT /doc.css payload") {
		t.Errorf("request bodies did not reach the origin: %q", seen)
	}
}

// TestUnsafeMethodInvalidatesLocation: the Location and Content-Location of a
// successful response are invalidated too, on the same host only.
func TestUnsafeMethodInvalidatesLocation(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.Header().Set("Location", "/items/1.json?x=1")
			w.Header().Set("Content-Location", "http://other.example/items/2.json")
			w.WriteHeader(http.StatusCreated)
			return
		}
		static("item", "max-age=600")(w, r)
	})
	n := startNode(t, o, Config{Sites: []site.Config{{Hosts: []string{"shop.example"}, Origins: []site.OriginConfig{{URL: o.URL}},
		Rules: []site.RuleConfig{{Extensions: []string{"json"}, Action: "cache"}}}}})
	for _, p := range []string{"/items/1.json?x=1", "/items/2.json"} {
		do(t, n, "GET", p, "Host", "shop.example")
		wantStatus(t, do(t, n, "GET", p, "Host", "shop.example"), "meshcdn; hit")
	}
	if r := do(t, n, "POST", "/items", "Host", "shop.example"); r.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %d", r.StatusCode)
	}
	wantStatus(t, do(t, n, "GET", "/items/1.json?x=1", "Host", "shop.example"), "meshcdn; fwd=uri-miss")
	wantStatus(t, do(t, n, "GET", "/items/2.json", "Host", "shop.example"), "meshcdn; hit") // other host's URI
}

// TestNeverStored: no-store, private and bypass-rule responses always reach the
// origin and leave nothing in the store.
func TestNeverStored(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/no-store.js":
			w.Header().Set("Cache-Control", "no-store")
		case "/private.js":
			w.Header().Set("Cache-Control", "private, max-age=600")
		default:
			w.Header().Set("Cache-Control", "public, max-age=600")
		}
		_, _ = w.Write([]byte("x"))
	})
	n := startNode(t, nil, Config{Sites: []site.Config{{Hosts: []string{"s.example"}, Origins: []site.OriginConfig{{URL: o.URL}},
		Rules: []site.RuleConfig{{PathPrefix: "/api/", Action: "bypass"}}}}})
	for _, p := range []string{"/no-store.js", "/private.js", "/api/data.js"} {
		for range 3 {
			r := do(t, n, "GET", p, "Host", "s.example")
			if strings.Contains(r.cacheStatus(), "hit;") || strings.HasSuffix(r.cacheStatus(), "hit") || strings.Contains(r.cacheStatus(), "stored") {
				t.Errorf("%s: Cache-Status %q", p, r.cacheStatus())
			}
		}
	}
	wantStatus(t, do(t, n, "GET", "/api/data.js", "Host", "s.example"), "meshcdn; fwd=bypass")
	wantHits(t, o, 10)
	for _, obj := range []string{"s.example/no-store.js", "s.example/private.js", "s.example/api/data.js"} {
		if o, ok := n.store.Get(obj); ok && len(o.Variants) > 0 {
			t.Errorf("%s stored", obj)
		}
	}
}

// TestTruncatedOriginBody: a body shorter than its Content-Length, or a chunked
// stream cut off, is not stored, and each client sees an aborted transfer.
func TestTruncatedOriginBody(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		switch r.URL.Path {
		case "/short.bin":
			w.Header().Set("Content-Length", "100000")
			_, _ = w.Write(make([]byte, 50000))
			w.(http.Flusher).Flush()
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.(*net.TCPConn).SetLinger(0)
				_ = conn.Close()
			}
		case "/chunked.bin":
			_, _ = w.Write(make([]byte, 50000))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // cuts the chunked stream
		}
	})
	n := startNode(t, o, Config{})
	for i, p := range []string{"/short.bin", "/chunked.bin"} {
		for j := range 2 {
			// Each request makes its own fill: the cut response was not stored.
			// (Connection: close: else the client may retry on a reused
			// connection that the edge aborted before any byte, adding a fill.)
			r := doMaybe(t, n, "GET", p, "Connection", "close")
			switch {
			case r.Response == nil:
				// Connection closed before a response: an aborted transfer.
			case r.StatusCode == http.StatusBadGateway:
				// The fill broke before the response began: nothing stored.
				wantStatus(t, r, "meshcdn; fwd=uri-miss")
				if cs := r.cacheStatus(); strings.Contains(cs, "; stored") || !strings.Contains(cs, "detail=aborted") {
					t.Errorf("%s request %d: Cache-Status %q; want aborted, not stored", p, j, cs)
				}
			case r.err == nil:
				t.Errorf("%s request %d: %d with %d bytes and no error; want an aborted transfer", p, j, r.StatusCode, len(r.body))
			case r.ContentLength >= 0 && int64(len(r.body)) == r.ContentLength:
				t.Errorf("%s request %d: a cut body looked complete", p, j)
			}
		}
		wantHits(t, o, int64(2*(i+1)))
	}
}

// TestStalledOriginDoesNotWedgeKey: a fill whose origin goes silent ends after
// FillIdleTimeout; the client's transfer is aborted and the next request makes
// a new fill.
func TestStalledOriginDoesNotWedgeKey(t *testing.T) {
	stall := make(chan struct{})
	defer close(stall)
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Length", "1000")
		_, _ = w.Write(make([]byte, 10))
		w.(http.Flusher).Flush()
		select {
		case <-stall:
		case <-r.Context().Done():
		}
	})
	n := startNode(t, o, Config{FillIdleTimeout: 300 * time.Millisecond})
	for i := range 2 {
		if r := do(t, n, "GET", "/slow.js"); r.err == nil {
			t.Errorf("request %d: stalled fill looked complete", i)
		}
	}
	wantHits(t, o, 2)
}

// TestRangeAndConditionalOnCachedEntry covers Range, multi-range, If-Range,
// 416, If-None-Match, If-Modified-Since and HEAD answered from the cache.
func TestRangeAndConditionalOnCachedEntry(t *testing.T) {
	body := "0123456789abcdefghijklmnopqrstuvwxyz"
	mod := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o := newOrigin(t, static(body, "public, max-age=600"))
	n := startNode(t, o, Config{})
	do(t, n, "GET", "/r.txt")

	r := do(t, n, "GET", "/r.txt", "Range", "bytes=2-5")
	if r.StatusCode != 206 || r.body != "2345" || r.Header.Get("Content-Range") != "bytes 2-5/36" {
		t.Errorf("single range: %d %q %q", r.StatusCode, r.body, r.Header.Get("Content-Range"))
	}
	wantStatus(t, r, "meshcdn; hit")
	if r := do(t, n, "GET", "/r.txt", "Range", "bytes=-3"); r.StatusCode != 206 || r.body != "xyz" {
		t.Errorf("suffix range: %d %q", r.StatusCode, r.body)
	}

	r = do(t, n, "GET", "/r.txt", "Range", "bytes=0-1, 10-12")
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if r.StatusCode != 206 || mt != "multipart/byteranges" {
		t.Fatalf("multi-range: %d %q", r.StatusCode, r.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(strings.NewReader(r.body), params["boundary"])
	var parts []string
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		parts = append(parts, p.Header.Get("Content-Range")+"="+string(b)+";"+p.Header.Get("Content-Type"))
	}
	if strings.Join(parts, " ") != "bytes 0-1/36=01;text/plain bytes 10-12/36=abc;text/plain" {
		t.Errorf("multi-range parts: %q", parts)
	}

	if r := do(t, n, "GET", "/r.txt", "Range", "bytes=0-3", "If-Range", `"v1"`); r.StatusCode != 206 || r.body != "0123" {
		t.Errorf("If-Range match: %d %q", r.StatusCode, r.body)
	}
	if r := do(t, n, "GET", "/r.txt", "Range", "bytes=0-3", "If-Range", `"v0"`); r.StatusCode != 200 || r.body != body {
		t.Errorf("If-Range mismatch: %d %q", r.StatusCode, r.body)
	}
	if r := do(t, n, "GET", "/r.txt", "Range", "bytes=0-3", "If-Range", mod.Format(http.TimeFormat)); r.StatusCode != 206 {
		t.Errorf("If-Range date: %d", r.StatusCode)
	}
	if r := do(t, n, "GET", "/r.txt", "Range", "bytes=100-"); r.StatusCode != 416 || r.Header.Get("Content-Range") != "bytes */36" {
		t.Errorf("unsatisfiable: %d %q", r.StatusCode, r.Header.Get("Content-Range"))
	}
	if r := do(t, n, "GET", "/r.txt", "Range", "lines=1-2"); r.StatusCode != 200 || r.body != body {
		t.Errorf("unknown range unit: %d", r.StatusCode)
	}

	r = do(t, n, "GET", "/r.txt", "If-None-Match", `"x", "v1"`)
	if r.StatusCode != 304 || r.body != "" || r.Header.Get("ETag") != `"v1"` || r.Header.Get("Content-Length") != "" {
		t.Errorf("If-None-Match: %d %q %v", r.StatusCode, r.body, r.Header)
	}
	wantStatus(t, r, "meshcdn; hit")
	if r := do(t, n, "GET", "/r.txt", "If-Modified-Since", mod.Format(http.TimeFormat)); r.StatusCode != 304 {
		t.Errorf("If-Modified-Since: %d", r.StatusCode)
	}
	if r := do(t, n, "GET", "/r.txt", "If-Modified-Since", mod.Add(-time.Hour).Format(http.TimeFormat)); r.StatusCode != 200 {
		t.Errorf("If-Modified-Since older: %d", r.StatusCode)
	}
	if r := do(t, n, "GET", "/r.txt", "If-Match", `"nope"`); r.StatusCode != 412 {
		t.Errorf("If-Match: %d", r.StatusCode)
	}
	r = do(t, n, "HEAD", "/r.txt")
	if r.StatusCode != 200 || r.body != "" || r.ContentLength != 36 {
		t.Errorf("HEAD: %d %q %d", r.StatusCode, r.body, r.ContentLength)
	}
	wantStatus(t, r, "meshcdn; hit")
	wantHits(t, o, 1)
}

// TestRangeOnMiss: a Range request on a miss fills the whole object (once) and
// is answered as soon as its bytes arrive.
func TestRangeOnMiss(t *testing.T) {
	body := strings.Repeat("abcdefghij", 100000) // 1 MB
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			t.Errorf("a fill asked the origin for a range")
		}
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write([]byte(body[:1000]))
		w.(http.Flusher).Flush()
		<-release
		_, _ = w.Write([]byte(body[1000:]))
	})
	n := startNode(t, o, Config{})
	r := do(t, n, "GET", "/v.mp4", "Range", "bytes=10-19") // answered before the origin finishes
	if r.StatusCode != 206 || r.body != body[10:20] || r.Header.Get("Content-Range") != "bytes 10-19/1000000" {
		t.Errorf("range on miss: %d %q %q", r.StatusCode, r.body, r.Header.Get("Content-Range"))
	}
	close(release)
	eventually(t, 5*time.Second, func() bool {
		return strings.HasPrefix(do(t, n, "HEAD", "/v.mp4").cacheStatus(), "meshcdn; hit")
	})
	if r := do(t, n, "GET", "/v.mp4", "Range", "bytes=999990-"); r.body != body[999990:] {
		t.Errorf("range of stored object: %q", r.body)
	}
	wantHits(t, o, 1)
}

// TestRevalidation: a stale entry is revalidated with its validators; a 304
// refreshes it and is served as the stored body.
func TestRevalidation(t *testing.T) {
	var inm []string
	var mu sync.Mutex
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inm = append(inm, r.Header.Get("If-None-Match"))
		mu.Unlock()
		w.Header().Set("Cache-Control", "no-cache") // always revalidate
		w.Header().Set("X-Version", strconv.Itoa(len(inm)))
		w.Header().Set("ETag", `"e1"`)
		if r.Header.Get("If-None-Match") == `"e1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		_, _ = w.Write([]byte("stored body"))
	})
	n := startNode(t, o, Config{})
	wantStatus(t, do(t, n, "GET", "/page.css"), "meshcdn; fwd=uri-miss; fwd-status=200; stored")
	r := do(t, n, "GET", "/page.css")
	wantStatus(t, r, "meshcdn; fwd=stale; fwd-status=304; stored")
	if r.StatusCode != 200 || r.body != "stored body" || r.Header.Get("X-Version") != "2" {
		t.Errorf("revalidated: %d %q version %q", r.StatusCode, r.body, r.Header.Get("X-Version"))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(inm) != 2 || inm[0] != "" || inm[1] != `"e1"` {
		t.Errorf("origin saw If-None-Match %q", inm)
	}
}

// TestVaryVariants: responses with Vary are stored per variant; trivially
// different Accept-Encoding values share one.
func TestVaryVariants(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Vary", "Accept-Language, Accept-Encoding")
		_, _ = w.Write([]byte("lang=" + r.Header.Get("Accept-Language") + " enc=" + r.Header.Get("Accept-Encoding")))
	})
	n := startNode(t, o, Config{})
	en := do(t, n, "GET", "/v.js", "Accept-Language", "en", "Accept-Encoding", "gzip, br")
	fr := do(t, n, "GET", "/v.js", "Accept-Language", "fr", "Accept-Encoding", "gzip, br")
	wantStatus(t, fr, "meshcdn; fwd=vary-miss")
	enAgain := do(t, n, "GET", "/v.js", "Accept-Language", "en", "Accept-Encoding", "br,gzip;q=0.9")
	wantStatus(t, enAgain, "meshcdn; hit")
	frAgain := do(t, n, "GET", "/v.js", "Accept-Language", "fr", "Accept-Encoding", "br, gzip")
	wantStatus(t, frAgain, "meshcdn; hit")
	if en.body != "lang=en enc=br, gzip" || enAgain.body != en.body || frAgain.body != fr.body || fr.body == en.body {
		t.Errorf("bodies: %q %q %q %q", en.body, enAgain.body, fr.body, frAgain.body)
	}
	wantStatus(t, do(t, n, "GET", "/v.js", "Accept-Language", "en"), "meshcdn; fwd=vary-miss") // no encoding
	wantHits(t, o, 3)
}

// TestMaxObjectSize: bodies over max_object_size stream through unstored.
func TestMaxObjectSize(t *testing.T) {
	big := strings.Repeat("x", 3<<20)
	o := newOrigin(t, static(big, "public, max-age=600"))
	n := startNode(t, o, Config{MemoryBytes: 8 << 20, MaxObjectSize: 1 << 20})
	r := do(t, n, "GET", "/big.zip")
	if r.err != nil || len(r.body) != len(big) {
		t.Fatalf("big body: %v, %d bytes", r.err, len(r.body))
	}
	wantStatus(t, r, "meshcdn; fwd=uri-miss; fwd-status=200; detail=too-large")
	wantStatus(t, do(t, n, "GET", "/big.zip"), "meshcdn; fwd=bypass; detail=hit-for-pass")
	if st := n.Store(); st.Bytes > 1<<20 {
		t.Errorf("store holds %d bytes", st.Bytes)
	}
	// A cold Range past the streaming window of such a body.
	r = do(t, n, "GET", "/other.zip", "Range", "bytes=2500000-2500009")
	if r.err != nil || r.StatusCode != 206 || r.body != "xxxxxxxxxx" {
		t.Fatalf("a Range in the middle of an unstored body: %d, %v, %q", r.StatusCode, r.err, r.body)
	}
}

// TestOriginUnreachable: fills and bypassed requests whose origin cannot be
// reached get a plain 502 that nothing downstream would cache.
func TestOriginUnreachable(t *testing.T) {
	o := newOrigin(t, static("x", "max-age=600"))
	n := startNode(t, o, Config{Sites: []site.Config{{Hosts: []string{"s.example"}, Origins: []site.OriginConfig{{URL: o.URL}},
		Rules: []site.RuleConfig{{PathPrefix: "/api/", Action: "bypass"}}}}})
	o.Close()
	for _, p := range []string{"/app.js", "/api/x"} {
		r := do(t, n, "GET", p, "Host", "s.example")
		if r.StatusCode != http.StatusBadGateway || !strings.Contains(r.body, "origin could not be reached") ||
			r.Header.Get("Cache-Control") != "" || r.Header.Get("Via") != "1.1 meshcdn" {
			t.Errorf("%s: %d %q %v", p, r.StatusCode, r.body, r.Header)
		}
	}
	wantStatus(t, do(t, n, "GET", "/app.js", "Host", "s.example"), "meshcdn; fwd=uri-miss; detail=origin-error")
	if v := counterValue(t, n, "meshcdn_origin_errors_total"); v != 3 {
		t.Errorf("origin errors %v, want 3", v)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestRangeOnUnstoredChunkedResponse: a Range request whose response is not
// stored and has no Content-Length gets the whole body at once (the edge
// never holds it whole, so it cannot cut a range out of it).
func TestRangeOnUnstoredChunkedResponse(t *testing.T) {
	body := strings.Repeat("z", 3<<20) // past the streamed fill's 1 MiB window
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		for i := 0; i < len(body); i += 64 << 10 {
			_, _ = w.Write([]byte(body[i : i+64<<10]))
			w.(http.Flusher).Flush()
		}
	})
	n := startNode(t, o, Config{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+n.HTTPAddr()+"/live.mp4", nil)
	req.Header.Set("Range", "bytes=0-99")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || len(got) != len(body) {
		t.Fatalf("%d, %d bytes, %v", resp.StatusCode, len(got), err)
	}
}
