package node

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/internal/units"
	"github.com/meshcdn/meshcdn/node/compress"
	"github.com/meshcdn/meshcdn/node/site"
)

// stylesheet is 20 KB of CSS.
func stylesheet() []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < 20_000; i++ {
		fmt.Fprintf(&b, ".rule-%d { color: #%06x; margin: %dpx %dpx; }\n", i, i*7919%0xffffff, i%17, i%23)
	}
	return b.Bytes()
}

// decode undoes a response's Content-Encoding.
func decode(t *testing.T, coding string, body []byte) []byte {
	t.Helper()
	var r io.Reader
	switch coding {
	case "br":
		r = brotli.NewReader(bytes.NewReader(body))
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	case "":
		return body
	default:
		t.Fatalf("coding %q", coding)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding %s: %v", coding, err)
	}
	return out
}

func compressionSite(o *testOrigin, t testing.TB, c compress.Config) Config {
	return Config{Sites: []site.Config{{Hosts: []string{"www.example.test"}, Origins: []site.OriginConfig{{URL: o.url(t).String()}},
		Compression: &c}}}
}

// TestCompression: a 20 KB stylesheet the origin sends uncompressed reaches
// Brotli, zstd and gzip clients encoded (identical to the origin's bytes
// once decoded, with Vary: Accept-Encoding and a weak ETag), and others and
// Range requests as it is, for one origin request; the encodings are kept
// and served again without encoding; a purge removes them with the
// representation; no-transform, a small body and an image are sent as
// they are.
func TestCompression(t *testing.T) {
	css := stylesheet()
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if ae := r.Header.Get("Accept-Encoding"); ae != "" {
			t.Errorf("the origin was asked with Accept-Encoding %q", ae)
		}
		w.Header().Set("Cache-Control", "public, max-age=600")
		w.Header().Set("ETag", `"css-1"`)
		switch r.URL.Path {
		case "/site.css":
			w.Header().Set("Content-Type", "text/css; charset=utf-8")
			_, _ = w.Write(css)
		case "/raw.css":
			w.Header().Set("Content-Type", "text/css")
			w.Header().Set("Cache-Control", "public, max-age=600, no-transform")
			_, _ = w.Write(css)
		case "/small.css":
			w.Header().Set("Content-Type", "text/css")
			_, _ = w.Write(css[:500])
		case "/logo.png":
			w.Header().Set("Content-Type", "image/png")
			_, _ = w.Write(css)
		}
	})
	n := startNode(t, nil, compressionSite(o, t, compress.Config{Zstd: true}))
	get := func(path string, hdr ...string) response {
		return rawDo(t, n, "GET", path, append([]string{"Host", "www.example.test"}, hdr...)...)
	}
	for i, c := range []struct{ ae, want string }{
		{"gzip, deflate, br", "br"}, {"gzip", "gzip"}, {"zstd, gzip;q=0.5", "zstd"}, {"br;q=0.2, gzip;q=0.8", "gzip"},
		{"", ""}, {"identity", ""}, {"br;q=0", ""}, {"*", "br"},
	} {
		var hdr []string
		if c.ae != "" {
			hdr = []string{"Accept-Encoding", c.ae}
		}
		r := get("/site.css", hdr...)
		if r.StatusCode != 200 || r.Header.Get("Content-Encoding") != c.want {
			t.Fatalf("Accept-Encoding %q: %d, Content-Encoding %q; want %q", c.ae, r.StatusCode, r.Header.Get("Content-Encoding"), c.want)
		}
		if !bytes.Equal(decode(t, c.want, []byte(r.body)), css) {
			t.Errorf("Accept-Encoding %q: the decoded body differs from the origin's", c.ae)
		}
		if !strings.Contains(r.Header.Get("Vary"), "Accept-Encoding") {
			t.Errorf("Accept-Encoding %q: Vary %q", c.ae, r.Header.Get("Vary"))
		}
		wantETag := `"css-1"`
		if c.want != "" {
			wantETag = `W/"css-1"`
			if cl := r.Header.Get("Content-Length"); i > 3 && cl != strconv.Itoa(len(r.body)) {
				t.Errorf("a stored encoding is sent with Content-Length %q; its length is %d", cl, len(r.body))
			}
		}
		if r.Header.Get("ETag") != wantETag {
			t.Errorf("Accept-Encoding %q: ETag %q; want %s", c.ae, r.Header.Get("ETag"), wantETag)
		}
	}
	wantHits(t, o, 1)
	// The stored encodings answer, without encoding again.
	before := labelledValue(t, n, "meshcdn_compression_saved_bytes_total", "www.example.test")
	r := get("/site.css", "Accept-Encoding", "br")
	wantStatus(t, r, "meshcdn; hit")
	if len(r.body) >= len(css)/3 || r.Header.Get("Content-Length") != strconv.Itoa(len(r.body)) {
		t.Errorf("the stored Brotli encoding: %d bytes of %d, Content-Length %q", len(r.body), len(css), r.Header.Get("Content-Length"))
	}
	if after := labelledValue(t, n, "meshcdn_compression_saved_bytes_total", "www.example.test"); after-before != float64(len(css)-len(r.body)) {
		t.Errorf("saved bytes grew by %v; want %d", after-before, len(css)-len(r.body))
	}
	// A Range is answered from the representation as it is.
	r = get("/site.css", "Accept-Encoding", "br", "Range", "bytes=0-99")
	if r.StatusCode != 206 || r.Header.Get("Content-Encoding") != "" || r.body != string(css[:100]) {
		t.Errorf("Range: %d, Content-Encoding %q", r.StatusCode, r.Header.Get("Content-Encoding"))
	}
	// A conditional request with the weak tag it was given is answered 304.
	if r := get("/site.css", "Accept-Encoding", "gzip", "If-None-Match", `W/"css-1"`); r.StatusCode != 304 {
		t.Errorf("If-None-Match with the weak tag: %d", r.StatusCode)
	}
	wantHits(t, o, 1)
	// Not for no-transform, a body under min_size, or a type not listed.
	for _, p := range []string{"/raw.css", "/small.css", "/logo.png"} {
		if r := get(p, "Accept-Encoding", "br, gzip"); r.StatusCode != 200 || r.Header.Get("Content-Encoding") != "" {
			t.Errorf("%s: %d, Content-Encoding %q; want it as it is", p, r.StatusCode, r.Header.Get("Content-Encoding"))
		}
	}
	// A purge of the representation takes its encodings with it.
	if r := do(t, n, "PURGE", "/site.css", "Host", "www.example.test"); r.StatusCode != 200 {
		t.Fatalf("PURGE: %d", r.StatusCode)
	}
	before4 := o.hits.Load()
	r = get("/site.css", "Accept-Encoding", "br")
	if o.hits.Load() != before4+1 || strings.HasPrefix(r.cacheStatus(), "meshcdn; hit") || !bytes.Equal(decode(t, "br", []byte(r.body)), css) {
		t.Errorf("after a purge, the Brotli encoding was served from before it: %s", r.cacheStatus())
	}
}

// TestCompressionMesh: a node that does not own the stylesheet fetches the
// representation from its owner (never an encoding) and encodes it itself,
// for one origin request in all.
func TestCompressionMesh(t *testing.T) {
	css := stylesheet()
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		w.Header().Set("Content-Type", "text/css")
		_, _ = w.Write(css)
	})
	cfg := func(name string, join ...string) Config {
		c := compressionSite(o, t, compress.Config{})
		c.Name = name
		c.Mesh = &MeshConfig{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Fast: true, Join: join}
		return c
	}
	n1 := startNode(t, nil, cfg("n1"))
	n2 := startNode(t, nil, cfg("n2", n1.GossipAddr()))
	eventually(t, 10e9, func() bool { return n1.RingMembers() == 2 && n2.RingMembers() == 2 })
	for i := range 8 {
		p := "/mesh/" + strconv.Itoa(i) + ".css"
		for _, n := range []*Node{n1, n2, n1, n2} {
			for _, ae := range []string{"br", "gzip", ""} {
				r := rawDo(t, n, "GET", p, "Host", "www.example.test", "Accept-Encoding", ae)
				if r.StatusCode != 200 || r.Header.Get("Content-Encoding") != ae || !bytes.Equal(decode(t, ae, []byte(r.body)), css) {
					t.Fatalf("%s at %s with %q: %d, %q", p, n.Name(), ae, r.StatusCode, r.Header.Get("Content-Encoding"))
				}
			}
		}
	}
	wantHits(t, o, 8)
}

// TestCompressionLarge: a 100 MiB text object is compressed on its way to
// the client, streamed, with bounded memory: neither the object nor its
// encoding is held.
func TestCompressionLarge(t *testing.T) {
	const size = 100 << 20
	words := strings.Fields("the edge compresses text the origin sends uncompressed while it streams to the client with bounded memory")
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Header().Set("Cache-Control", "public, max-age=600")
		rng := rand.New(rand.NewPCG(7, 7))
		buf := make([]byte, 0, 64<<10)
		sent := 0
		for sent < size {
			buf = buf[:0]
			for len(buf) < cap(buf)-32 {
				buf = append(append(buf, words[rng.IntN(len(words))]...), ' ')
				if rng.IntN(12) == 0 {
					buf = strconv.AppendInt(buf, rng.Int64(), 36)
				}
			}
			m := min(len(buf), size-sent)
			if _, err := w.Write(buf[:m]); err != nil {
				return
			}
			sent += m
		}
	})
	c := compressionSite(o, t, compress.Config{MaxSize: units.Size(200 << 20)})
	c.MaxObjectSize = 8 << 20
	n := startNode(t, nil, c)
	before := testutil.PeakRSS(t, 0)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+n.HTTPAddr()+"/big.txt", nil)
	req.Host = "www.example.test"
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := rawTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	}
	counted := &countingWriter{w: io.Discard}
	zr, err := gzip.NewReader(io.TeeReader(resp.Body, counted))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.Copy(io.Discard, zr)
	if err != nil || got != size {
		t.Fatalf("decoded %d bytes (%v); want %d", got, err, size)
	}
	growth := testutil.PeakRSS(t, 0) - before
	t.Logf("100 MiB of text sent as %d MiB of gzip; peak RSS grew by %d MiB", counted.n>>20, growth>>20)
	// The encoder's window and buffers, the client's and the origin's, and
	// garbage not yet collected, well under the object or its encoding. The
	// race detector's shadow memory multiplies every allocation: the bound
	// is checked without it.
	if growth > 48<<20 && !raceEnabled {
		t.Errorf("peak RSS grew by %d MiB (bound 48 MiB)", growth>>20)
	}
}

// rawTransport asks for no encoding of its own and decodes nothing.
var rawTransport = &http.Transport{DisableCompression: true}

// rawDo is do through rawTransport: the client sees Content-Encoding and
// the encoded body as the edge sent them.
func rawDo(t *testing.T, n *Node, method, path string, hdr ...string) response {
	t.Helper()
	return doWith(t, rawTransport, n, method, path, hdr...)
}

// BenchmarkCompressedHit is a hit of a 20 KB stylesheet's stored Brotli
// encoding beside a hit of the stylesheet itself, on a compressing site.
func BenchmarkCompressedHit(b *testing.B) {
	css := stylesheet()
	o := newOrigin(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("Content-Type", "text/css")
		_, _ = w.Write(css)
	})
	c := compressionSite(o, b, compress.Config{})
	c.Logger = slog.New(slog.DiscardHandler)
	n := startNode(b, nil, c)
	for _, ae := range []string{"", "br"} {
		req := httptest.NewRequest("GET", "http://www.example.test/site.css", nil)
		if ae != "" {
			req.Header.Set("Accept-Encoding", ae)
		}
		w := &discard{h: http.Header{}}
		n.ServeHTTP(w, req) // fill, and encode
		w = &discard{h: http.Header{}}
		n.ServeHTTP(w, req)
		if w.h.Get("Cache-Status") != "meshcdn; hit" || w.h.Get("Content-Encoding") != ae {
			b.Fatalf("%q: not a hit of its encoding: %v", ae, w.h)
		}
		name := "identity"
		if ae != "" {
			name = ae
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				n.ServeHTTP(w, req)
			}
		})
	}
}

// TestCompressionPassThrough: a compressing site's request that goes to the
// origin after all (the key proved uncacheable) carries the client's
// Accept-Encoding, so the origin may encode as it would without the edge;
// a fill, for the cache, is asked without it.
func TestCompressionPassThrough(t *testing.T) {
	var seen []string
	var mu sync.Mutex
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Accept-Encoding"))
		mu.Unlock()
		w.Header().Set("Cache-Control", "private")
		w.Header().Set("Content-Type", "text/css")
		_, _ = w.Write(stylesheet())
	})
	n := startNode(t, nil, compressionSite(o, t, compress.Config{}))
	for range 2 {
		r := rawDo(t, n, "GET", "/account.css", "Host", "www.example.test", "Accept-Encoding", "br, gzip")
		if r.StatusCode != 200 {
			t.Fatalf("status %d", r.StatusCode)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != "" || seen[1] != "br, gzip" {
		t.Errorf("the origin saw Accept-Encoding %q; want none on the fill, the client's on the pass", seen)
	}
}

// countingWriter counts what passes through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	m, err := c.w.Write(p)
	c.n += int64(m)
	return m, err
}
