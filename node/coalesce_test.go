package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestThunderingHerd sends 1,000 concurrent cold requests for one 1 MiB object.
// The origin sends the first 64 KiB, then holds the rest until every client has
// received its first byte: so the test passes only if waiters are streamed the
// body while the origin is still sending it, and only one origin request is made.
func TestThunderingHerd(t *testing.T) {
	const clients = 1000
	obj := make([]byte, 1<<20)
	_, _ = rand.NewChaCha8([32]byte{7}).Read(obj)
	want := sha256.Sum256(obj)

	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		w.Header().Set("Content-Length", strconv.Itoa(len(obj)))
		_, _ = w.Write(obj[:64<<10])
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(obj[64<<10:])
	})
	// The herd comes from one address, on a connection each: past the
	// default max_connections_per_ip, as behind a proxy.
	n := startNode(t, o, Config{MaxConnectionsPerIP: 2 * clients})

	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: 0, DisableCompression: true}
	defer tr.CloseIdleConnections()
	var firstBytes atomic.Int64
	allFirst := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	sums := make(chan [32]byte, clients)
	for range clients {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+n.HTTPAddr()+"/video/big.mp4", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			first := make([]byte, 1)
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				errs <- err
				return
			}
			if firstBytes.Add(1) == clients {
				close(allFirst)
			}
			h := sha256.New()
			h.Write(first)
			if _, err := io.Copy(h, resp.Body); err != nil {
				errs <- err
				return
			}
			sums <- [32]byte(h.Sum(nil))
		})
	}
	select {
	case <-allFirst:
		// Every client has its first byte and the origin has not finished.
	case err := <-errs:
		close(release)
		t.Fatalf("client failed before all first bytes: %v", err)
	case <-time.After(60 * time.Second):
		close(release)
		t.Fatalf("only %d of %d clients got a first byte while the origin was still sending", firstBytes.Load(), clients)
	}
	close(release)
	wg.Wait()
	close(errs)
	close(sums)
	for err := range errs {
		t.Fatalf("client: %v", err)
	}
	got := 0
	for s := range sums {
		if s != want {
			t.Fatal("a client's body differs from the origin's")
		}
		got++
	}
	if got != clients {
		t.Fatalf("%d complete bodies, want %d", got, clients)
	}
	wantHits(t, o, 1)
	wantStatus(t, do(t, n, "GET", "/video/big.mp4"), "meshcdn; hit")
}

// TestFirstClientHangsUp: the fill goes on for the others when the client that
// started it leaves.
func TestFirstClientHangsUp(t *testing.T) {
	release := make(chan struct{})
	body := bytes.Repeat([]byte("0123456789"), 20000)
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body[:1000])
		w.(http.Flusher).Flush()
		<-release
		_, _ = w.Write(body[1000:])
	})
	n := startNode(t, o, Config{})

	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+n.HTTPAddr()+"/a.bin", nil)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	cancel() // the first client leaves mid-body
	resp.Body.Close()

	done := make(chan response, 1)
	go func() { done <- doMaybe(t, n, "GET", "/a.bin") }()
	eventually(t, 5*time.Second, func() bool { return counterValue(t, n, "meshcdn_coalesced_requests_total") == 1 })
	close(release)
	r := <-done
	if r.err != nil || r.body != string(body) {
		t.Fatalf("second client: err %v, %d bytes", r.err, len(r.body))
	}
	wantStatus(t, r, "meshcdn; fwd=uri-miss; fwd-status=200; stored; collapsed")
	wantStatus(t, do(t, n, "GET", "/a.bin"), "meshcdn; hit")
	wantHits(t, o, 1)
}

// TestHitForPass: once a key's response proved uncacheable, requests for it go
// to the origin in parallel instead of queueing behind one another.
func TestHitForPass(t *testing.T) {
	var inFlight, peak atomic.Int64
	gate := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		cur := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if cur <= p || peak.CompareAndSwap(p, cur) {
				break
			}
		}
		if r.Header.Get("X-Wait") != "" {
			select {
			case <-gate:
			case <-r.Context().Done():
			}
		}
		w.Header().Set("Cache-Control", "private")
		_, _ = w.Write([]byte("personal"))
	})
	n := startNode(t, o, Config{})
	wantStatus(t, do(t, n, "GET", "/account"), "meshcdn; fwd=uri-miss; fwd-status=200; detail=private")
	wantStatus(t, do(t, n, "GET", "/account"), "meshcdn; fwd=bypass; detail=hit-for-pass")

	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() { doMaybe(t, n, "GET", "/account", "X-Wait", "1") })
	}
	eventually(t, 5*time.Second, func() bool { return inFlight.Load() == 5 })
	close(gate)
	wg.Wait()
	if peak.Load() != 5 {
		t.Errorf("peak origin concurrency %d, want 5 (hit-for-pass requests are not coalesced)", peak.Load())
	}
}

// TestPrivateResponseIsNotShared: waiters that joined a fill whose response
// turns out uncacheable get their own response from the origin, not another
// client's.
func TestPrivateResponseIsNotShared(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int64
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			<-release
		}
		w.Header().Set("Cache-Control", "private")
		_, _ = w.Write([]byte("for " + r.Header.Get("Cookie")))
	})
	n := startNode(t, o, Config{})
	first := make(chan response, 1)
	go func() { first <- doMaybe(t, n, "GET", "/me", "Cookie", "alice") }()
	eventually(t, 5*time.Second, func() bool { return calls.Load() == 1 })
	second := make(chan response, 1)
	go func() { second <- doMaybe(t, n, "GET", "/me", "Cookie", "bob") }()
	eventually(t, 5*time.Second, func() bool { return counterValue(t, n, "meshcdn_coalesced_requests_total") == 1 })
	close(release)
	if a, b := <-first, <-second; a.body != "for alice" || b.body != "for bob" {
		t.Errorf("alice got %q, bob got %q", a.body, b.body)
	}
}
