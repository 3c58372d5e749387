package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/internal/units"
	"github.com/meshcdn/meshcdn/node/site"
	adminv1 "github.com/meshcdn/meshcdn/proto/meshcdn/admin/v1"
)

var benchSizes = []struct {
	name string
	size int
}{{"1KiB", 1 << 10}, {"100KiB", 100 << 10}, {"1MiB", 1 << 20}}

// discard is a ResponseWriter that keeps nothing, so a benchmark measures the
// handler and not a recorder's buffer. Its header map is reused, as net/http
// would allocate one per request anyway.
type discard struct {
	h http.Header
	n int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }
func (d *discard) WriteHeader(int)             {}

// BenchmarkHit measures the edge's hit path in process (site lookup, rule,
// cache key, store look-up, freshness, headers, body write), beside a bare
// handler that writes the same stored response: the difference is what the
// cache adds per hit.
func BenchmarkHit(b *testing.B) {
	for _, sz := range benchSizes {
		body := make([]byte, sz.size)
		o := newOrigin(b, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "public, max-age=3600")
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("ETag", `"bench"`)
			_, _ = w.Write(body)
		})
		n := startNode(b, o, Config{MemoryBytes: 64 << 20, MaxObjectSize: 8 << 20,
			Logger: slog.New(slog.DiscardHandler)})
		req := httptest.NewRequest("GET", "http://bench.example/obj.bin", nil)
		req = req.WithContext(context.Background())
		w := &discard{h: http.Header{}}
		n.ServeHTTP(w, req) // fill
		w = &discard{h: http.Header{}}
		n.ServeHTTP(w, req)
		if w.h.Get("Cache-Status") != "meshcdn; hit" || w.n != sz.size {
			b.Fatalf("not a hit: %v, %d bytes", w.h, w.n)
		}
		stored := w.h.Clone()

		b.Run("meshcdn/"+sz.name, func(b *testing.B) {
			b.SetBytes(int64(sz.size))
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				n.ServeHTTP(w, req)
			}
		})
		b.Run("baseline/"+sz.name, func(b *testing.B) {
			// The least any handler does to send this response.
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hdr := w.Header()
				for k, v := range stored {
					hdr[k] = v
				}
				hdr["Content-Length"] = []string{strconv.Itoa(len(body))}
				w.WriteHeader(200)
				_, _ = w.Write(body)
			})
			b.SetBytes(int64(sz.size))
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, req)
			}
		})
	}
}

// BenchmarkHitLoopback is the whole stack: a keep-alive HTTP/1.1 client on
// loopback fetching a stored object, beside net/http serving the same bytes
// from memory with no cache in between.
func BenchmarkHitLoopback(b *testing.B) {
	for _, sz := range benchSizes {
		body := make([]byte, sz.size)
		o := newOrigin(b, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "public, max-age=3600")
			_, _ = w.Write(body)
		})
		n := startNode(b, o, Config{MemoryBytes: 64 << 20, MaxObjectSize: 8 << 20,
			Logger: slog.New(slog.DiscardHandler)})
		plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "public, max-age=3600")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			_, _ = w.Write(body)
		}))
		b.Cleanup(plain.Close)
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
		b.Cleanup(client.CloseIdleConnections)
		get := func(b *testing.B, url string) {
			resp, err := client.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		get(b, "http://"+n.HTTPAddr()+"/obj.bin")
		b.Run("meshcdn/"+sz.name, func(b *testing.B) {
			b.SetBytes(int64(sz.size))
			b.ReportAllocs()
			for b.Loop() {
				get(b, "http://"+n.HTTPAddr()+"/obj.bin")
			}
		})
		b.Run("net-http/"+sz.name, func(b *testing.B) {
			b.SetBytes(int64(sz.size))
			b.ReportAllocs()
			for b.Loop() {
				get(b, plain.URL+"/obj.bin")
			}
		})
	}
}

// BenchmarkPurge3Nodes is the time from a Purge RPC to its last receipt on a
// 3-node cluster on loopback.
func BenchmarkPurge3Nodes(b *testing.B) {
	o := newOrigin(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = w.Write([]byte("x"))
	})
	var nodes []*Node
	for i := range 3 {
		cfg := Config{Name: fmt.Sprintf("n%d", i+1), AdminAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler),
			Mesh: &MeshConfig{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Fast: true}}
		if i > 0 {
			cfg.Mesh.Join = []string{nodes[0].GossipAddr()}
		}
		nodes = append(nodes, startNode(b, o, cfg))
	}
	for nodes[0].RingMembers() != 3 || nodes[2].RingMembers() != 3 {
		time.Sleep(10 * time.Millisecond)
	}
	c, err := grpc.NewClient(nodes[0].AdminAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ac := adminv1.NewAdminServiceClient(c)
	req := &adminv1.PurgeRequest{Urls: []string{"http://127.0.0.1/bench.css"}}
	for b.Loop() {
		resp, err := ac.Purge(context.Background(), req)
		if err != nil || len(resp.GetNodes()) != 3 {
			b.Fatalf("%v %v", resp, err)
		}
	}
}

// BenchmarkDrainHandOff is the time a drained node of a 3-node loopback
// cluster takes to hand 1000 objects of 10 KiB off to their new owners, from
// the Drain call to the last one taken. Each iteration builds its own
// cluster (not timed).
func BenchmarkDrainHandOff(b *testing.B) {
	const objects = 1000
	body := make([]byte, 10<<10)
	o := newOrigin(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = w.Write(body)
	})
	for range b.N {
		b.StopTimer()
		var nodes []*Node
		for i := range 3 {
			cfg := Config{Name: fmt.Sprintf("n%d", i+1), MemoryBytes: 64 << 20, Logger: slog.New(slog.DiscardHandler),
				Mesh: &MeshConfig{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Fast: true}}
			if i > 0 {
				cfg.Mesh.Join = []string{nodes[0].GossipAddr()}
			}
			nodes = append(nodes, startNode(b, o, cfg))
		}
		for nodes[0].RingMembers() != 3 || nodes[1].RingMembers() != 3 || nodes[2].RingMembers() != 3 {
			time.Sleep(10 * time.Millisecond)
		}
		d := nodes[2]
		for i, filled := 0, 0; filled < objects; i++ {
			p := "/h/" + strconv.Itoa(i) + ".bin"
			if owner, _ := d.mesh.Ring().Owner(d.sites.Default().CacheKey("127.0.0.1", p, "")); owner == "n3" {
				do(b, d, "GET", p)
				filled++
			}
		}
		b.StartTimer()
		if err := d.drain(); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(time.Minute)
		for counterValue(b, d, "meshcdn_handed_off_total") < objects {
			if time.Now().After(deadline) {
				b.Fatalf("%v of %d objects offered within a minute", counterValue(b, d, "meshcdn_handed_off_total"), objects)
			}
			time.Sleep(time.Millisecond) // nothing to wait on but the counter
		}
		b.StopTimer()
		if taken := counterValue(b, nodes[0], "meshcdn_handoffs_total") + counterValue(b, nodes[1], "meshcdn_handoffs_total"); taken != objects {
			b.Fatalf("%v objects taken, want %d", taken, objects)
		}
		for _, n := range nodes {
			_ = n.Shutdown(context.Background())
		}
	}
	b.ReportMetric(float64(objects*b.N)/b.Elapsed().Seconds(), "objects/s")
}

// BenchmarkHTTPSHit is a hit over HTTPS on loopback, beside the same hit
// over cleartext HTTP/1.1: on a kept-alive HTTP/1.1 connection, on a
// kept-alive HTTP/2 one, and on a new connection per request, with a full
// TLS 1.3 handshake or a resumed one.
func BenchmarkHTTPSHit(b *testing.B) {
	cert := testutil.WriteCert(b, b.TempDir(), "bench", []string{"bench.example"}, testutil.CertOptions{})
	for _, sz := range benchSizes[:2] {
		body := make([]byte, sz.size)
		o := newOrigin(b, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "public, max-age=3600")
			_, _ = w.Write(body)
		})
		n := startNode(b, o, Config{MemoryBytes: 64 << 20, MaxObjectSize: 8 << 20, HTTPSAddr: "127.0.0.1:0",
			TLSCertFile: cert.CertFile, TLSKeyFile: cert.KeyFile, Logger: slog.New(slog.DiscardHandler)})
		run := func(name, url string, tr *http.Transport, fresh bool) {
			client := &http.Client{Transport: tr}
			b.Cleanup(client.CloseIdleConnections)
			b.Run(name+"/"+sz.name, func(b *testing.B) {
				b.SetBytes(int64(sz.size))
				b.ReportAllocs()
				for b.Loop() {
					resp, err := client.Get(url)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if fresh {
						client.CloseIdleConnections()
					}
				}
			})
		}
		tlsTransport := func(protos []string, cache tls.ClientSessionCache) *http.Transport {
			tr := &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true, ForceAttemptHTTP2: protos[0] == "h2",
				TLSClientConfig: &tls.Config{RootCAs: cert.Pool, ServerName: "bench.example", NextProtos: protos, ClientSessionCache: cache}}
			if protos[0] != "h2" {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			return tr
		}
		httpURL, httpsURL := "http://"+n.HTTPAddr()+"/obj.bin", "https://"+n.HTTPSAddr()+"/obj.bin"
		warm := &http.Client{}
		if resp, err := warm.Get(httpURL); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		run("http1", httpURL, &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}, false)
		run("https1", httpsURL, tlsTransport([]string{"http/1.1"}, nil), false)
		run("https2", httpsURL, tlsTransport([]string{"h2"}, nil), false)
		run("https-full-handshake", httpsURL, tlsTransport([]string{"http/1.1"}, nil), true)
		run("https-resumed", httpsURL, tlsTransport([]string{"http/1.1"}, tls.NewLRUClientSessionCache(8)), true)
	}
}

// BenchmarkLargeObject serves a 256 MiB object through a 3-node loopback
// mesh to one client at a time, stored whole (at its owner, on the disk
// tier) or as slices of 4 MiB spread over the three (slice_size): cold (a
// new object each time, the origin's transfer included), warm, and a warm
// 1 MiB Range in its middle, each asked of a node that does not own the
// object's key. It reports the origin's bytes per request, the time to
// the response's first byte, and the client's throughput (MB/s).
func BenchmarkLargeObject(b *testing.B) {
	const size = 256 << 20
	obj := randomBytes(size, 11)
	for _, mode := range []struct {
		name  string
		slice int64
	}{{"whole", 0}, {"sliced", 4 << 20}} {
		b.Run(mode.name, func(b *testing.B) {
			o := newRangeOrigin(b)
			o.put("/v/big.mp4", obj, `"big1"`)
			nodes := startCluster(b, nil, 3, func(c *Config) {
				c.Logger = slog.New(slog.DiscardHandler)
				c.CacheDir, c.MemoryBytes = b.TempDir(), 1<<30
				c.Sites = []site.Config{{Hosts: []string{"video.test"}, Origins: []site.OriginConfig{{URL: o.URL}}, SliceSize: units.Size(mode.slice)}}
			})
			// get fetches path at a node that does not own its key, and
			// returns the time to the first byte.
			get := func(b *testing.B, path string, rng string, want []byte) time.Duration {
				n := nodes[0]
				if owner, _ := n.mesh.Ring().Owner("video.test" + path); owner == n.Name() {
					n = nodes[1]
				}
				req, _ := http.NewRequestWithContext(b.Context(), "GET", "http://"+n.HTTPAddr()+path, nil)
				req.Host = "video.test"
				if rng != "" {
					req.Header.Set("Range", rng)
				}
				start := time.Now()
				resp, err := http.DefaultTransport.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				ttfb := time.Since(start)
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || !bytes.Equal(got, want) {
					b.Fatalf("%s %s: %d, %d bytes, %v", path, rng, resp.StatusCode, len(got), err)
				}
				return ttfb
			}
			run := func(name string, path func(i int) string, rng string, want []byte) {
				b.Run(name, func(b *testing.B) {
					b.SetBytes(int64(len(want)))
					before, i := o.sent.Load(), 0
					var ttfb time.Duration
					for b.Loop() {
						ttfb += get(b, path(i), rng, want)
						i++
					}
					b.ReportMetric(float64(o.sent.Load()-before)/float64(i)/(1<<20), "origin-MiB/op")
					b.ReportMetric(float64(ttfb.Microseconds())/1000/float64(i), "ttfb-ms")
				})
			}
			cold := 0
			run("cold", func(int) string { cold++; return fmt.Sprintf("/v/big.mp4?cold=%d", cold) }, "", obj)
			get(b, "/v/big.mp4", "", obj) // warmed
			run("warm", func(int) string { return "/v/big.mp4" }, "", obj)
			run("range", func(int) string { return "/v/big.mp4" }, "bytes=134217728-135266303", obj[128<<20:129<<20])
		})
	}
}
