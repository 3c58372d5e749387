package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// local records what the server passes on to its node.
type local struct {
	purged  []string
	drained bool
}

func (l *local) PurgeLocal(req *peerv1.PurgeRequest) int64 {
	l.purged = append(l.purged, req.GetId())
	return int64(len(req.GetKeys()))
}
func (l *local) LocalStats() *peerv1.StatsResponse {
	return &peerv1.StatsResponse{OriginRequests: 7}
}
func (l *local) DrainLocal() error { l.drained = true; return nil }
func (l *local) HandOffDone(context.Context) (HandOff, error) {
	return HandOff{Taken: 3, NotTaken: 1, Took: time.Second}, nil
}
func (l *local) SyncPurges(req *peerv1.SyncPurgesRequest) *peerv1.SyncPurgesResponse {
	return &peerv1.SyncPurgesResponse{Incarnation: req.GetIncarnation() + 1}
}
func (l *local) AppliedPurges(ids []string) []string { return ids[:1] }
func (l *local) ACMECertificate(name string) ([]byte, []byte) {
	if name == "shop.test" {
		return []byte("cert"), []byte("key")
	}
	return nil, nil
}
func (l *local) ACMEChallenge(token string) (string, bool) {
	return token + ".thumbprint", token == "tok"
}
func (l *local) Lease(req *peerv1.LeaseRequest) (*peerv1.LeaseResponse, error) {
	if len(req.GetSites()) == 0 {
		return nil, errors.New("no sites")
	}
	return &peerv1.LeaseResponse{Grants: []*peerv1.LeaseGrant{{Site: req.GetSites()[0].GetSite(), Share: &peerv1.Limits{Concurrency: 2}}}}, nil
}

// serve runs a peer server over h on loopback and returns its address and a
// pool whose fetches wait headTimeout for a head.
func serve(t *testing.T, h http.Handler, l Local, headTimeout time.Duration) (string, *Pool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(ServerOptions(nil)...)
	peerv1.RegisterPeerServiceServer(s, NewServer(h, l, nil, slog.New(slog.DiscardHandler)))
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ln) }()
	p := NewPool(headTimeout, nil)
	t.Cleanup(func() {
		p.CloseAll()
		s.Stop()
		<-done
	})
	return ln.Addr().String(), p
}

func fetchReq(key string) *peerv1.FetchRequest {
	return &peerv1.FetchRequest{Key: key, Host: "www.example.test", PathQuery: "/" + key + "?q=1", From: "n1"}
}

// A fetch runs through the node's handler, marked as a peer's, and its
// response streams back in chunks, checked end to end.
func TestFetchThroughHandler(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 3*ChunkSize/16+100) // more than three chunks
	addr, p := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		from, ok := FromPeer(r.Context())
		if !ok || from != "n1" || r.Host != "www.example.test" || r.URL.RequestURI() != "/big?q=1" || r.Header.Get("Accept-Encoding") != "gzip" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Cache-Status", "meshcdn; hit")
		_, _ = w.Write(body)
	}), &local{}, 5*time.Second)
	req := fetchReq("big")
	req.Headers = []*peerv1.HeaderField{{Name: "accept-encoding", Values: []string{"gzip"}}}
	resp, err := p.Fetch(t.Context(), addr, req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, body) || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("status %d, %d of %d bytes, %v, %v", resp.StatusCode, len(got), len(body), resp.Header, err)
	}
}

// A cache-only fetch asks the handler with only-if-cached; a take-over asks
// for the head alone and names the offering node; a slice's fetch names
// the slice; arguments are checked.
func TestFetchModes(t *testing.T) {
	addr, p := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		from, takeOver := TakeOverFrom(r.Context())
		w.Header().Set("X-Seen", r.Method+" "+r.Header.Get("Cache-Control")+" "+from)
		if s, ok := SliceOf(r.Context()); ok {
			w.Header().Set("X-Seen", fmt.Sprintf("slice %d of %d", s.Index, s.Size))
		}
		if !takeOver {
			_, _ = io.WriteString(w, "body")
		}
	}), &local{}, 5*time.Second)
	seen := func(req *peerv1.FetchRequest) string {
		resp, err := p.Fetch(t.Context(), addr, req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Header.Get("X-Seen")
	}
	cacheOnly := fetchReq("a")
	cacheOnly.CacheOnly = true
	if got := seen(cacheOnly); got != "GET only-if-cached " {
		t.Errorf("cache-only fetch seen as %q", got)
	}
	offer := fetchReq("a")
	offer.TakeOver = true
	if got := seen(offer); got != "HEAD  n1" {
		t.Errorf("take-over seen as %q", got)
	}
	sl := fetchReq("a")
	sl.Slice = &peerv1.Slice{Size: 1 << 20, Index: 7}
	if got := seen(sl); got != "slice 7 of 1048576" {
		t.Errorf("a slice's fetch seen as %q", got)
	}
	for _, bad := range []*peerv1.FetchRequest{
		{Key: "k", Host: "h", PathQuery: "/a", Slice: &peerv1.Slice{Size: 1000}},
		{Key: "k", Host: "h", PathQuery: "/a", Slice: &peerv1.Slice{Size: 1 << 20, Index: -1}},
		{Host: "h", PathQuery: "/a"},
		{Key: "k", Host: "h", PathQuery: "a"},
		{Key: "k", Host: "h", PathQuery: "/a", TakeOver: true},
		{Key: "k", Host: "h", PathQuery: "/a", From: "n1", TakeOver: true, CacheOnly: true},
	} {
		if _, err := p.Fetch(t.Context(), addr, bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: %v; want InvalidArgument", bad, err)
		}
	}
}

// A response the handler aborts after its head is never read as complete:
// the body read fails, small or large.
func TestAbortedResponse(t *testing.T) {
	for _, size := range []int{100, 3 * ChunkSize} {
		addr, p := serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "999999999")
			_, _ = w.Write(bytes.Repeat([]byte("x"), size))
			panic(http.ErrAbortHandler)
		}), &local{}, 5*time.Second)
		resp, err := p.Fetch(t.Context(), addr, fetchReq("cut"))
		if err != nil {
			continue // found broken before the caller saw it
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("%d bytes then an abort read as a complete body", size)
		}
	}
}

// A peer that sends no head within the timeout is given up on; a closed
// pool opens no connection.
func TestHeadTimeoutAndClosedPool(t *testing.T) {
	release := make(chan struct{})
	addr, p := serve(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }), &local{}, 100*time.Millisecond)
	defer close(release)
	start := time.Now()
	if _, err := p.Fetch(t.Context(), addr, fetchReq("slow")); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("silent peer: %v after %v", err, time.Since(start))
	}
	p.CloseAll()
	if _, err := p.Fetch(t.Context(), addr, fetchReq("a")); !errors.Is(err, ErrPoolClosed) {
		t.Fatalf("fetch on a closed pool: %v", err)
	}
}

// The other calls reach the node's Local and come back.
func TestLocalCalls(t *testing.T) {
	l := &local{}
	addr, p := serve(t, http.NotFoundHandler(), l, 5*time.Second)
	ctx := t.Context()
	if n, err := p.Purge(ctx, addr, &peerv1.PurgeRequest{Id: "p1", Keys: []string{"a", "b"}}); err != nil || n != 2 || len(l.purged) != 1 {
		t.Errorf("Purge: %d %v %v", n, err, l.purged)
	}
	if r, err := p.SyncPurges(ctx, addr, &peerv1.SyncPurgesRequest{Incarnation: 4}); err != nil || r.GetIncarnation() != 5 {
		t.Errorf("SyncPurges: %v %v", r, err)
	}
	if ids, err := p.PurgeStatus(ctx, addr, []string{"x", "y"}); err != nil || len(ids) != 1 || ids[0] != "x" {
		t.Errorf("PurgeStatus: %v %v", ids, err)
	}
	if s, err := p.Stats(ctx, addr); err != nil || s.GetOriginRequests() != 7 {
		t.Errorf("Stats: %v %v", s, err)
	}
	h, err := p.Drain(ctx, addr, "n1", true)
	if err != nil || !l.drained || h.Taken != 3 || h.NotTaken != 1 || h.Took != time.Second {
		t.Errorf("Drain: %+v %v drained=%v", h, err, l.drained)
	}
	if c, k, err := p.Certificate(ctx, addr, "shop.test"); err != nil || string(c) != "cert" || string(k) != "key" {
		t.Errorf("Certificate: %q %q %v", c, k, err)
	}
	if c, k, err := p.Certificate(ctx, addr, "other.test"); err != nil || c != nil || k != nil {
		t.Errorf("Certificate of a name without one: %q %q %v", c, k, err)
	}
	if _, _, err := p.Certificate(ctx, addr, ""); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Certificate without a name: %v", err)
	}
	if ka, err := p.Challenge(ctx, addr, "tok"); err != nil || ka != "tok.thumbprint" {
		t.Errorf("Challenge: %q %v", ka, err)
	}
	if ka, err := p.Challenge(ctx, addr, "other"); err != nil || ka != "" {
		t.Errorf("Challenge of an unknown token: %q %v", ka, err)
	}
	if _, err := p.Challenge(ctx, addr, ""); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Challenge without a token: %v", err)
	}
}

// frozen is a peer service that takes fetches on (its headers go out) and
// then says nothing more: a peer that froze while it worked on the head.
type frozen struct {
	peerv1.UnimplementedPeerServiceServer
	accept, head bool // it sent its headers; and the response head
}

func (f frozen) Fetch(_ *peerv1.FetchRequest, stream grpc.ServerStreamingServer[peerv1.FetchResponse]) error {
	if f.accept {
		_ = stream.SendHeader(nil)
	}
	if f.head {
		_ = stream.Send(&peerv1.FetchResponse{Msg: &peerv1.FetchResponse_Head{Head: &peerv1.ResponseHead{Status: 200, Size: 10}}})
	}
	<-stream.Context().Done()
	return nil
}

// A peer that does not accept a fetch loses it within the accept bound, a
// peer that accepted it and then fell silent within the heartbeat gap, and
// after two accept timeouts fetches skip the peer at once (but for one
// probe a second); a slow but alive peer (heartbeats) is waited for.
func TestUnresponsivePeer(t *testing.T) {
	serveFrozen := func(accept bool, head ...bool) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer()
		peerv1.RegisterPeerServiceServer(s, frozen{accept: accept, head: len(head) > 0 && head[0]})
		go func() { _ = s.Serve(ln) }()
		t.Cleanup(s.Stop)
		return ln.Addr().String()
	}
	p := NewPool(5*time.Second, nil)
	t.Cleanup(p.CloseAll)
	timed := func(addr string) (time.Duration, error) {
		start := time.Now()
		resp, err := p.Fetch(t.Context(), addr, fetchReq("k"))
		if err == nil {
			resp.Body.Close()
		}
		return time.Since(start), err
	}
	silent := serveFrozen(true)
	if d, err := timed(silent); !errors.Is(err, ErrNotAccepted) || d > HeartbeatGap+time.Second {
		t.Errorf("an accepted fetch then silence: %v after %v; want ErrNotAccepted after about %v", err, d, HeartbeatGap)
	}
	if d, err := timed(serveFrozen(true, true)); !errors.Is(err, ErrNotAccepted) || d > HeartbeatGap+time.Second {
		t.Errorf("a head then silence: %v after %v; want ErrNotAccepted after about %v", err, d, HeartbeatGap)
	}
	stuck := serveFrozen(false)
	for i := range 2 {
		if d, err := timed(stuck); !errors.Is(err, ErrNotAccepted) || d > initialAccept+time.Second {
			t.Errorf("fetch %d to a peer that accepts nothing: %v after %v", i, err, d)
		}
	}
	if d, err := timed(stuck); !errors.Is(err, ErrSuspect) || d > 50*time.Millisecond {
		t.Errorf("after two timeouts: %v after %v; want ErrSuspect at once", err, d)
	}
	if got := p.Suspect(); len(got) != 1 || got[0] != stuck {
		t.Errorf("Suspect() = %v", got)
	}
	// A slow origin behind a live peer: the head comes after 2 s of heartbeats.
	addr, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Second)
		_, _ = io.WriteString(w, "late")
	}), &local{}, 5*time.Second)
	resp, err := p.Fetch(t.Context(), addr, fetchReq("slow"))
	if err != nil {
		t.Fatalf("a slow but live peer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "late" {
		t.Errorf("a slow but live peer: %q", b)
	}
}

// TestCertificateOnlyToMembers: a private key goes to a caller with a
// verified certificate or over loopback, never to a stranger on the network
// (mesh.insecure included).
func TestCertificateOnlyToMembers(t *testing.T) {
	s := NewServer(http.NotFoundHandler(), &local{}, nil, slog.New(slog.DiscardHandler))
	for _, tt := range []struct {
		p    *grpcpeer.Peer
		want codes.Code
	}{
		{&grpcpeer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("10.0.0.7"), Port: 40000}}, codes.PermissionDenied},
		{&grpcpeer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3"), Port: 40000}}, codes.OK},
		{&grpcpeer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("10.0.0.7"), Port: 40000},
			AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}}}, codes.OK},
		{&grpcpeer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("10.0.0.7"), Port: 40000}, AuthInfo: credentials.TLSInfo{}}, codes.PermissionDenied},
	} {
		ctx := grpcpeer.NewContext(t.Context(), tt.p)
		_, err := s.Certificate(ctx, &peerv1.CertificateRequest{Name: "shop.test"})
		if status.Code(err) != tt.want {
			t.Errorf("from %v (%T): %v; want %v", tt.p.Addr, tt.p.AuthInfo, err, tt.want)
		}
	}
}

// countingListener counts the connections it accepted.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// TestWarm: a member that joins gets its connection opened at once, before
// any fetch, so the first fetch does not spend its accept bound on the
// handshakes; without Warm the client connects only when a fetch comes.
func TestWarm(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	s := grpc.NewServer(ServerOptions(nil)...)
	peerv1.RegisterPeerServiceServer(s, NewServer(http.NotFoundHandler(), &local{}, nil, slog.New(slog.DiscardHandler)))
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(cl) }()
	p := NewPool(5*time.Second, nil)
	t.Cleanup(func() {
		p.CloseAll()
		s.Stop()
		<-done
	})
	addr := ln.Addr().String()
	p.Warm(addr)
	deadline := time.Now().Add(10 * time.Second)
	for cl.n.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Warm opened no connection within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := p.Fetch(t.Context(), addr, fetchReq("k")); err != nil {
		t.Fatal(err)
	}
	if n := cl.n.Load(); n != 1 {
		t.Errorf("%d connections after Warm and a fetch, want the one Warm opened", n)
	}
}

// TestLease: a lease request goes to the node's keeper and back; one the
// keeper finds malformed is an invalid argument, not a failure of the peer.
func TestLease(t *testing.T) {
	addr, p := serve(t, http.NotFoundHandler(), &local{}, time.Second)
	resp, err := p.Lease(t.Context(), addr, &peerv1.LeaseRequest{From: "a", Sites: []*peerv1.LeaseAsk{{Site: "shop.test"}}})
	if err != nil || len(resp.GetGrants()) != 1 || resp.GetGrants()[0].GetShare().GetConcurrency() != 2 {
		t.Fatalf("Lease: %v, %v", resp, err)
	}
	if _, err := p.Lease(t.Context(), addr, &peerv1.LeaseRequest{From: "a"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a malformed lease request: %v; want InvalidArgument", err)
	}
}
