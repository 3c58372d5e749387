package main

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
	"github.com/valyala/fasthttp"
)

const wrkOutput = `Running 5s test @ http://127.0.0.1:18601/obj/1k.bin
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.02ms  21.33ms   91.17%
    Req/Sec    24.10k     1.23k   26.40k    70.00%
  Latency Distribution
     50%    1.90ms
     75%    2.30ms
     90%    2.90ms
     99%    650.00us
  120000 requests in 5.00s, 140.00MB read
Requests/sec:  23999.50
Transfer/sec:     28.00MB
`

func TestParseWrk(t *testing.T) {
	s, n, err := parseWrk(wrkOutput)
	if err != nil || s.rps != 23999.50 || s.p99ms != 0.65 || n != 120000 {
		t.Errorf("%+v %d %v", s, n, err)
	}
	if _, _, err := parseWrk(strings.Replace(wrkOutput, "Requests/sec", "  Non-2xx or 3xx responses: 12\nRequests/sec", 1)); err == nil {
		t.Error("a run with error responses was accepted")
	}
	if _, _, err := parseWrk("unable to connect"); err == nil {
		t.Error("no report was accepted")
	}
}

func TestMedian(t *testing.T) {
	if median([]float64{3, 1, 2}) != 2 || median([]float64{4, 1, 3, 2}) != 2.5 || median(nil) != 0 {
		t.Error("median")
	}
}

// TestFastReference: the fasthttp reference answers an object from memory
// with the header fields the net/http reference sends, 404 for another
// path, and passes /pass/ to a real origin and back.
func TestFastReference(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "origin answers "+r.URL.Path+" for "+r.Header.Get("X-Forwarded-For"))
	}))
	t.Cleanup(origin.Close)
	h := fastReferenceHandler(map[string][]byte{"/obj/1k.bin": []byte("object")}, strings.TrimPrefix(origin.URL, "http://"))
	get := func(path string) *fasthttp.Response {
		var c fasthttp.RequestCtx
		c.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.ParseIP("127.0.0.9"), Port: 1}, nil)
		c.Request.SetRequestURI(path)
		c.Request.Header.SetHost("127.0.0.1")
		h(&c)
		r := &fasthttp.Response{}
		c.Response.CopyTo(r)
		return r
	}
	r := get("/obj/1k.bin")
	if r.StatusCode() != 200 || string(r.Body()) != "object" || string(r.Header.Peek("Cache-Control")) != "public, max-age=86400" ||
		len(r.Header.Peek("Last-Modified")) == 0 {
		t.Errorf("an object: %d %q, %s", r.StatusCode(), r.Body(), r.Header.String())
	}
	if r := get("/obj/none"); r.StatusCode() != 404 {
		t.Errorf("a missing object: %d", r.StatusCode())
	}
	if r := get("/pass/x"); r.StatusCode() != 200 || string(r.Body()) != "origin answers /pass/x for 127.0.0.9" {
		t.Errorf("the pass-through: %d %q", r.StatusCode(), r.Body())
	}
}

const h2loadOutput = `starting benchmark...
finished in 5.00s, 10234.60 req/s, 1.23MB/s
requests: 51173 total, 51223 started, 51173 done, 51173 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 51173 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 11.97MB (12552563) total, 181.95KB (186312) headers (space savings 95.61%), 11.53MB (12089107) data
`

func TestParseH2load(t *testing.T) {
	s, n, err := parseH2load(h2loadOutput)
	if err != nil || s.rps != 10234.60 || s.p99ms != -1 || n != 51173 {
		t.Errorf("%+v %d %v", s, n, err)
	}
	for _, bad := range []string{
		strings.Replace(h2loadOutput, "0 failed", "3 failed", 1),
		strings.Replace(h2loadOutput, "0 5xx", "12 5xx", 1),
		"h2load: connection refused",
	} {
		if _, _, err := parseH2load(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestParseFetches(t *testing.T) {
	log := `GET /herd/meshcdn.bin HTTP/1.1 200 1048576 1796652753.224
GET /herd/mesh.bin HTTP/1.1 200 1048576 1796652754.000
GET /herd/meshcdn.bin HTTP/1.1 200 5000 1796652753.101
GET /obj/1k.bin HTTP/1.1 200 1024 1796652750.5
`
	got, err := parseFetches(strings.NewReader(log), "/herd/meshcdn.bin")
	if err != nil || len(got) != 2 {
		t.Fatalf("%+v %v", got, err)
	}
	if want := time.UnixMilli(1796652753224); !got[0].end.Equal(want) || got[0].bytes != 1<<20 {
		t.Errorf("first fetch %+v, want its end at %v and 1 MiB", got[0], want)
	}
	if got[1].bytes != 5000 {
		t.Errorf("second fetch %+v", got[1])
	}
	if _, err := parseFetches(strings.NewReader("GET /herd/meshcdn.bin HTTP/1.1 200 x 1.0\n"), "/herd/meshcdn.bin"); err == nil {
		t.Error("a line of another format was accepted")
	}
}

// TestRunH3: the HTTP/3 load generator counts the requests a real quic-go
// server answers, and fails a run with answers other than 200.
func TestRunH3(t *testing.T) {
	dir := t.TempDir()
	if err := selfSigned(dir); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var served atomic.Int64
	srv := &http3.Server{TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/missing" {
				http.NotFound(w, r)
				return
			}
			served.Add(1)
			_, _ = io.WriteString(w, "hit")
		})}
	done := make(chan struct{})
	go func() { _ = srv.Serve(udp); close(done) }()
	t.Cleanup(func() { _ = srv.Close(); _ = udp.Close(); <-done })
	addr := udp.LocalAddr().String()
	s, n, err := runH3(t.Context(), "https://127.0.0.1/obj", addr, 300*time.Millisecond, 4)
	if err != nil || n == 0 || s.rps <= 0 || s.p99ms <= 0 {
		t.Fatalf("%+v %d %v", s, n, err)
	}
	if served.Load() < n {
		t.Errorf("counted %d requests; the server answered %d", n, served.Load())
	}
	if _, _, err := runH3(t.Context(), "https://127.0.0.1/missing", addr, 100*time.Millisecond, 2); err == nil {
		t.Error("a run of 404s was accepted")
	}
}
