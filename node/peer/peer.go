// Package peer is the gRPC protocol between edge nodes: a Server that answers
// a peer's Fetch by running the request through the node's own HTTP handler
// (cache hit, coalesced fill from the origin) and streaming the response, and
// a Pool of client connections that turns a peer's stream back into an
// *http.Response whose body is verified against the sender's checksum.
//
// A request that arrives from a peer carries a mark (FromPeer) so the node
// answers it itself and never forwards it again.
package peer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshcdn/meshcdn/node/slice"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// ChunkSize is the largest body chunk of a Fetch stream.
const ChunkSize = 256 << 10

// Flow-control windows of peer connections: per stream and per connection.
const (
	StreamWindow = 1 << 20
	ConnWindow   = 8 << 20
)

// ServerOptions are the gRPC server options peers need: the same fixed
// windows, and with tlsCfg (nil: cleartext) mutual TLS.
func ServerOptions(tlsCfg *tls.Config) []grpc.ServerOption {
	opts := []grpc.ServerOption{grpc.InitialWindowSize(StreamWindow), grpc.InitialConnWindowSize(ConnWindow)}
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	return opts
}

type fromPeerKey struct{}

type takeOverKey struct{}

// TakeOverFrom reports whether ctx belongs to a take-over request (see
// FetchRequest.take_over), and which peer offers its stored response.
func TakeOverFrom(ctx context.Context) (string, bool) {
	from, ok := ctx.Value(takeOverKey{}).(string)
	return from, ok
}

// FromPeer reports whether ctx belongs to a request a peer sent, and which.
func FromPeer(ctx context.Context) (string, bool) {
	from, ok := ctx.Value(fromPeerKey{}).(string)
	return from, ok
}

type sliceKey struct{}

type classKey struct{}

// ClassOf returns the class the sending node gave a peer fetch (see
// FetchRequest.class); false for a request from no peer, or one that gave
// none.
func ClassOf(ctx context.Context) (peerv1.FetchClass, bool) {
	c, ok := ctx.Value(classKey{}).(peerv1.FetchClass)
	return c, ok && c != peerv1.FetchClass_FETCH_CLASS_UNSPECIFIED
}

// SliceOf returns the slice a peer's fetch asks for, if it asks for one.
func SliceOf(ctx context.Context) (slice.Spec, bool) {
	s, ok := ctx.Value(sliceKey{}).(slice.Spec)
	return s, ok
}

// FetchedField carries, between a node's handler and the peer service,
// when the response came from the origin (the head's response_time): the
// handler sets it on answers to peers, the client sets it on the response
// it returns. It never reaches an HTTP client.
const FetchedField = "Meshcdn-Fetched"

// VouchedField carries, the same way, the ids of the purges the sending
// node vouches for (ResponseHead.vouched_purges), one per field line.
const VouchedField = "Meshcdn-Vouched-Purges"

// Local is what the server needs of its node besides the HTTP handler.
type Local interface {
	// PurgeLocal applies a purge to the node alone.
	PurgeLocal(req *peerv1.PurgeRequest) int64
	// LocalStats returns the node's counters.
	LocalStats() *peerv1.StatsResponse
	// DrainLocal takes the node out of the ring.
	DrainLocal() error
	// HandOffDone waits until a draining node has offered its hottest
	// objects to their new owners, and tells how that went.
	HandOffDone(ctx context.Context) (HandOff, error)
	// SyncPurges returns a page of the node's purge log.
	SyncPurges(req *peerv1.SyncPurgesRequest) *peerv1.SyncPurgesResponse
	// AppliedPurges returns those of ids the node has applied.
	AppliedPurges(ids []string) []string
	// ACMECertificate returns the certificate the node obtained for name,
	// nil when it has none.
	ACMECertificate(name string) (certPEM, keyPEM []byte)
	// ACMEChallenge returns the key authorization of a token of an order
	// the node runs.
	ACMEChallenge(token string) (string, bool)
	// Lease grants the caller its shares of the origin budgets the node
	// keeps; an error is a malformed request.
	Lease(req *peerv1.LeaseRequest) (*peerv1.LeaseResponse, error)
}

// Server answers peers' Fetch calls through an HTTP handler, and their
// Purge and Stats calls through Local.
type Server struct {
	peerv1.UnimplementedPeerServiceServer
	h        http.Handler
	p        Local
	draining func() bool
	log      *slog.Logger
}

var _ peerv1.PeerServiceServer = (*Server)(nil)

// NewServer returns a server that answers through h and p. While draining
// (nil: never) reports true, it refuses take-over offers (see IsDraining).
func NewServer(h http.Handler, p Local, draining func() bool, log *slog.Logger) *Server {
	return &Server{h: h, p: p, draining: draining, log: log}
}

// IsDraining reports whether err is a peer's refusal of a take-over offer
// because it drains too: it owns no keys, and what it took would leave
// with it.
func IsDraining(err error) bool { return status.Code(err) == codes.FailedPrecondition }

// HandOff is how a draining node's offers of its objects went.
type HandOff struct {
	Taken, NotTaken int64
	Took            time.Duration
}

// Drain implements peerv1.PeerServiceServer.
func (s *Server) Drain(ctx context.Context, req *peerv1.DrainRequest) (*peerv1.DrainResponse, error) {
	if err := s.p.DrainLocal(); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	if !req.GetWait() {
		return &peerv1.DrainResponse{}, nil
	}
	h, err := s.p.HandOffDone(ctx)
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}
	return &peerv1.DrainResponse{HandedOff: h.Taken, NotTaken: h.NotTaken, Took: durationpb.New(h.Took)}, nil
}

// Stats implements peerv1.PeerServiceServer.
func (s *Server) Stats(context.Context, *peerv1.StatsRequest) (*peerv1.StatsResponse, error) {
	return s.p.LocalStats(), nil
}

// Purge implements peerv1.PeerServiceServer.
func (s *Server) Purge(_ context.Context, req *peerv1.PurgeRequest) (*peerv1.PurgeResponse, error) {
	return &peerv1.PurgeResponse{Removed: s.p.PurgeLocal(req)}, nil
}

// Certificate implements peerv1.PeerServiceServer. A private key goes only
// to a caller that proved itself a member with a certificate of the
// cluster CA, or that calls from this host: never in the clear across a
// network, even with mesh.insecure.
func (s *Server) Certificate(ctx context.Context, req *peerv1.CertificateRequest) (*peerv1.CertificateResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	if !provenOrLocal(ctx) {
		return nil, status.Error(codes.PermissionDenied, "certificates go only to members with mesh TLS, or over loopback")
	}
	c, k := s.p.ACMECertificate(req.GetName())
	return &peerv1.CertificateResponse{CertPem: c, KeyPem: k}, nil
}

// Challenge implements peerv1.PeerServiceServer.
func (s *Server) Challenge(_ context.Context, req *peerv1.ChallengeRequest) (*peerv1.ChallengeResponse, error) {
	if req.GetToken() == "" {
		return nil, status.Error(codes.InvalidArgument, "token is required")
	}
	ka, ok := s.p.ACMEChallenge(req.GetToken())
	if !ok {
		ka = ""
	}
	return &peerv1.ChallengeResponse{KeyAuthorization: ka}, nil
}

// SyncPurges implements peerv1.PeerServiceServer.
func (s *Server) SyncPurges(_ context.Context, req *peerv1.SyncPurgesRequest) (*peerv1.SyncPurgesResponse, error) {
	return s.p.SyncPurges(req), nil
}

// PurgeStatus implements peerv1.PeerServiceServer.
func (s *Server) PurgeStatus(_ context.Context, req *peerv1.PurgeStatusRequest) (*peerv1.PurgeStatusResponse, error) {
	return &peerv1.PurgeStatusResponse{Applied: s.p.AppliedPurges(req.GetIds())}, nil
}

// Lease implements peerv1.PeerServiceServer.
func (s *Server) Lease(_ context.Context, req *peerv1.LeaseRequest) (*peerv1.LeaseResponse, error) {
	resp, err := s.p.Lease(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return resp, nil
}

// Fetch implements peerv1.PeerServiceServer.
func (s *Server) Fetch(req *peerv1.FetchRequest, stream grpc.ServerStreamingServer[peerv1.FetchResponse]) (err error) {
	if req.GetKey() == "" || req.GetHost() == "" || req.GetPathQuery() == "" || req.GetPathQuery()[0] != '/' {
		return status.Error(codes.InvalidArgument, "key, host and an absolute path_query are required")
	}
	ctx := context.WithValue(stream.Context(), fromPeerKey{}, req.GetFrom())
	method := http.MethodGet
	if req.GetTakeOver() {
		if req.GetFrom() == "" || req.GetCacheOnly() {
			return status.Error(codes.InvalidArgument, "take_over needs from and excludes cache_only")
		}
		if s.draining != nil && s.draining() {
			return status.Error(codes.FailedPrecondition, "take_over refused: this member drains and owns no keys")
		}
		ctx = context.WithValue(ctx, takeOverKey{}, req.GetFrom())
		method = http.MethodHead
	}
	if c := req.GetClass(); c != peerv1.FetchClass_FETCH_CLASS_UNSPECIFIED {
		if _, known := peerv1.FetchClass_name[int32(c)]; !known {
			return status.Errorf(codes.InvalidArgument, "class %d is none of FetchClass", c)
		}
		ctx = context.WithValue(ctx, classKey{}, c)
	}
	if sl := req.GetSlice(); sl != nil {
		spec := slice.Spec{Size: sl.GetSize(), Index: sl.GetIndex()}
		if !spec.Valid() {
			return status.Errorf(codes.InvalidArgument, "slice: size must be %d to %d bytes and index at least 0", slice.MinSize, slice.MaxSize)
		}
		ctx = context.WithValue(ctx, sliceKey{}, spec)
	}
	hr, err := http.NewRequestWithContext(ctx, method, "http://"+req.GetHost()+req.GetPathQuery(), nil)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "bad request: %v", err)
	}
	hr.RequestURI = req.GetPathQuery()
	hr.RemoteAddr = req.GetFrom() + ":0"
	for _, f := range req.GetHeaders() {
		hr.Header[http.CanonicalHeaderKey(f.GetName())] = f.GetValues()
	}
	if req.GetCacheOnly() {
		hr.Header.Set("Cache-Control", "only-if-cached")
	}
	// Accept the fetch at once, before any cache or origin work: the sender
	// bounds its wait for this tightly, so a frozen peer costs it little.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	w := &streamWriter{stream: stream, header: http.Header{}, sum: sha256.New()}
	stopBeats := w.heartbeat()
	defer stopBeats()
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				s.log.Error("peer fetch panicked", "key", req.GetKey(), "panic", p)
			}
			err = status.Error(codes.Aborted, "response aborted: the origin's body broke off")
		}
	}()
	s.h.ServeHTTP(w, hr)
	if w.err != nil {
		return w.err
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if err := w.flush(); err != nil {
		return err
	}
	return stream.Send(&peerv1.FetchResponse{Msg: &peerv1.FetchResponse_End{End: &peerv1.ResponseEnd{
		Size: w.n, Sha256: w.sum.Sum(nil)}}})
}

// streamWriter is the http.ResponseWriter a peer's request is answered into.
type streamWriter struct {
	stream      grpc.ServerStreamingServer[peerv1.FetchResponse]
	header      http.Header
	wroteHeader bool
	buf         []byte
	sum         hash.Hash
	n           int64
	err         error

	sendMu   sync.Mutex // the head's send against the heartbeats'
	headSent bool
	beatsOff bool
}

// Heartbeat is how often a peer working on a fetch's head (its origin is
// slow) tells the sender it is alive, with an empty message; HeartbeatGap
// is how long a sender waits without any sign before it gives up on a
// peer that accepted the fetch and then froze.
const (
	Heartbeat    = 250 * time.Millisecond
	HeartbeatGap = 1500 * time.Millisecond
)

// heartbeat sends empty messages every Heartbeat until the head is sent;
// the returned function stops it, and no heartbeat is sent once it has
// returned. A timer, not a goroutine: a hit's head goes out long before
// the first beat.
func (w *streamWriter) heartbeat() func() {
	var t *time.Timer
	beat := func() {
		w.sendMu.Lock()
		defer w.sendMu.Unlock()
		if w.headSent || w.beatsOff {
			return
		}
		if err := w.stream.Send(&peerv1.FetchResponse{}); err == nil {
			t.Reset(Heartbeat)
		}
	}
	w.sendMu.Lock()
	t = time.AfterFunc(Heartbeat, beat)
	w.sendMu.Unlock()
	return func() {
		w.sendMu.Lock()
		w.beatsOff = true
		w.sendMu.Unlock()
		t.Stop()
	}
}

func (w *streamWriter) Header() http.Header { return w.header }

func (w *streamWriter) WriteHeader(code int) {
	if w.wroteHeader || w.err != nil {
		return
	}
	w.wroteHeader = true
	size := int64(-1)
	if v := w.header.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			size = n
		}
	}
	cs := w.header.Get("Cache-Status")
	head := &peerv1.ResponseHead{Status: int32(code), Size: size, CacheStatus: cs,
		Stored: strings.Contains(cs, "; hit") || strings.Contains(cs, "; stored")}
	if v := w.header.Get(FetchedField); v != "" {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			head.ResponseTime = timestamppb.New(t)
		}
		w.header.Del(FetchedField)
		// The node's own answer to a peer sets both fields; vouchers
		// without a fetch time came from elsewhere (an origin's header).
		head.VouchedPurges = w.header.Values(VouchedField)
	}
	w.header.Del(VouchedField)
	for _, v := range w.header.Values("Vary") {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				head.Vary = append(head.Vary, http.CanonicalHeaderKey(f))
			}
		}
	}
	for k, vs := range w.header {
		head.Headers = append(head.Headers, &peerv1.HeaderField{Name: k, Values: vs})
	}
	w.sendMu.Lock()
	w.headSent = true
	w.err = w.stream.Send(&peerv1.FetchResponse{Msg: &peerv1.FetchResponse_Head{Head: head}})
	w.sendMu.Unlock()
}

func (w *streamWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	w.sum.Write(p)
	w.n += int64(len(p))
	written := len(p)
	for len(p) > 0 {
		room := ChunkSize - len(w.buf)
		take := min(room, len(p))
		w.buf = append(w.buf, p[:take]...)
		p = p[take:]
		if len(w.buf) == ChunkSize {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return written, nil
}

// Flush sends what is buffered, so the peer streams it on.
func (w *streamWriter) Flush() { _ = w.flush() }

func (w *streamWriter) flush() error {
	if w.err != nil || len(w.buf) == 0 {
		return w.err
	}
	w.err = w.stream.Send(&peerv1.FetchResponse{Msg: &peerv1.FetchResponse_Chunk{Chunk: w.buf}})
	w.buf = make([]byte, 0, ChunkSize)
	return w.err
}

// Pool holds one client connection per peer address, created on first use.
type Pool struct {
	timeout time.Duration
	tlsFor  func(addr string) (*tls.Config, error) // nil: cleartext
	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn
	health  map[string]*responsiveness
	closed  bool // by CloseAll: no new connections
}

// ErrPoolClosed is a call on a pool after CloseAll.
var ErrPoolClosed = errors.New("peer: connection pool closed")

// NewPool returns a pool whose fetches wait at most headTimeout for the
// response head. With tlsFor, connections use mutual TLS: tlsFor returns
// the configuration for the peer at addr (which checks that the peer is the
// member expected there), or an error when no member is known there.
func NewPool(headTimeout time.Duration, tlsFor func(addr string) (*tls.Config, error)) *Pool {
	return &Pool{timeout: headTimeout, tlsFor: tlsFor, conns: map[string]*grpc.ClientConn{}, health: map[string]*responsiveness{}}
}

func (p *Pool) conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrPoolClosed
	}
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	creds := insecure.NewCredentials()
	if p.tlsFor != nil {
		cfg, err := p.tlsFor(addr)
		if err != nil {
			return nil, fmt.Errorf("peer %s: %w", addr, err)
		}
		creds = credentials.NewTLS(cfg)
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		// Fixed flow-control windows (no BDP growth to 16 MiB): a stream buffers
		// at most StreamWindow, so a large body crosses in bounded memory.
		grpc.WithInitialWindowSize(StreamWindow), grpc.WithInitialConnWindowSize(ConnWindow))
	if err != nil {
		return nil, err
	}
	p.conns[addr] = c
	return c, nil
}

// Warm opens the connection to addr in the background, when a member
// joins: the first fetch then finds it ready instead of spending its
// accept bound on the TCP, TLS and HTTP/2 handshakes.
func (p *Pool) Warm(addr string) {
	if c, err := p.conn(addr); err == nil {
		c.Connect()
	}
}

// Close closes the connection to addr, when a member leaves.
func (p *Pool) Close(addr string) {
	p.mu.Lock()
	c, ok := p.conns[addr]
	delete(p.conns, addr)
	delete(p.health, addr) // a member that comes back there starts afresh
	p.mu.Unlock()
	if ok {
		_ = c.Close()
	}
}

// CloseAll closes every connection; later calls fail with ErrPoolClosed.
func (p *Pool) CloseAll() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[string]*grpc.ClientConn{}
	p.closed = true
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Lease asks the peer at addr, the keeper of some origin budgets, for
// shares of them.
func (p *Pool) Lease(ctx context.Context, addr string, req *peerv1.LeaseRequest) (*peerv1.LeaseResponse, error) {
	c, err := p.conn(addr)
	if err != nil {
		return nil, err
	}
	resp, err := peerv1.NewPeerServiceClient(c).Lease(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	return resp, nil
}

// Purge asks the peer at addr to apply a purge and returns what it removed.
func (p *Pool) Purge(ctx context.Context, addr string, req *peerv1.PurgeRequest) (int64, error) {
	c, err := p.conn(addr)
	if err != nil {
		return 0, err
	}
	resp, err := peerv1.NewPeerServiceClient(c).Purge(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("peer %s: %w", addr, err)
	}
	return resp.GetRemoved(), nil
}

// SyncPurges reads a page of the purge log of the peer at addr.
func (p *Pool) SyncPurges(ctx context.Context, addr string, req *peerv1.SyncPurgesRequest) (*peerv1.SyncPurgesResponse, error) {
	c, err := p.conn(addr)
	if err != nil {
		return nil, err
	}
	resp, err := peerv1.NewPeerServiceClient(c).SyncPurges(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	return resp, nil
}

// PurgeStatus asks the peer at addr which of ids it has applied.
func (p *Pool) PurgeStatus(ctx context.Context, addr string, ids []string) ([]string, error) {
	c, err := p.conn(addr)
	if err != nil {
		return nil, err
	}
	resp, err := peerv1.NewPeerServiceClient(c).PurgeStatus(ctx, &peerv1.PurgeStatusRequest{Ids: ids})
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	return resp.GetApplied(), nil
}

// Drain asks the peer at addr to take itself out of the ring; with wait, it
// answers once the peer has offered its objects to their new owners.
func (p *Pool) Drain(ctx context.Context, addr, from string, wait bool) (HandOff, error) {
	c, err := p.conn(addr)
	if err != nil {
		return HandOff{}, err
	}
	resp, err := peerv1.NewPeerServiceClient(c).Drain(ctx, &peerv1.DrainRequest{From: from, Wait: wait})
	if err != nil {
		return HandOff{}, fmt.Errorf("peer %s: %w", addr, err)
	}
	return HandOff{Taken: resp.GetHandedOff(), NotTaken: resp.GetNotTaken(), Took: resp.GetTook().AsDuration()}, nil
}

// Certificate asks the peer at addr for the certificate it obtained for
// name; nil when it has none yet.
func (p *Pool) Certificate(ctx context.Context, addr, name string) (certPEM, keyPEM []byte, err error) {
	c, err := p.conn(addr)
	if err != nil {
		return nil, nil, err
	}
	resp, err := peerv1.NewPeerServiceClient(c).Certificate(ctx, &peerv1.CertificateRequest{Name: name})
	if err != nil {
		return nil, nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	return resp.GetCertPem(), resp.GetKeyPem(), nil
}

// Challenge asks the peer at addr for the key authorization of an HTTP-01
// token; "" when it runs no order with that token.
func (p *Pool) Challenge(ctx context.Context, addr, token string) (string, error) {
	c, err := p.conn(addr)
	if err != nil {
		return "", err
	}
	resp, err := peerv1.NewPeerServiceClient(c).Challenge(ctx, &peerv1.ChallengeRequest{Token: token})
	if err != nil {
		return "", fmt.Errorf("peer %s: %w", addr, err)
	}
	return resp.GetKeyAuthorization(), nil
}

// Stats asks the peer at addr for its counters.
func (p *Pool) Stats(ctx context.Context, addr string) (*peerv1.StatsResponse, error) {
	c, err := p.conn(addr)
	if err != nil {
		return nil, err
	}
	s, err := peerv1.NewPeerServiceClient(c).Stats(ctx, &peerv1.StatsRequest{})
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	return s, nil
}

// ErrChecksum reports a body whose SHA-256 differs from the sender's.
var ErrChecksum = errors.New("peer: body checksum mismatch")

// Fetch asks the peer at addr for req and returns its response once the head
// has arrived. The body streams from the peer; reading it fails, and the
// response must be treated as broken, if the stream ends before the end
// message or the checksum does not match. ctx bounds the whole stream.
func (p *Pool) Fetch(ctx context.Context, addr string, req *peerv1.FetchRequest) (*http.Response, error) {
	health := p.responsivenessOf(addr)
	start := time.Now()
	if !health.admit(start) {
		return nil, fmt.Errorf("peer %s: %w", addr, ErrSuspect)
	}
	c, err := p.conn(addr)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	var stream grpc.ServerStreamingClient[peerv1.FetchResponse]
	accepted, got, alive := make(chan error, 1), make(chan first, 1), make(chan struct{}, 1)
	go func() {
		// Opening the stream waits for the connection, which a frozen peer
		// never completes; then the peer sends its headers as soon as it
		// takes the fetch on, and the head once it has one (from its cache,
		// or after the origin). All of it runs under the accept bound.
		s, err := peerv1.NewPeerServiceClient(c).Fetch(sctx, req)
		if err == nil {
			stream = s // read by Fetch only after accepted or got
			_, err = s.Header()
		}
		accepted <- err
		if err != nil {
			got <- first{err: err}
			return
		}
		for {
			m, err := s.Recv()
			if err == nil && m.GetMsg() == nil { // a heartbeat: the peer still works on it
				select {
				case alive <- struct{}{}:
				default:
				}
				continue
			}
			got <- first{m, err}
			return
		}
	}()
	timeout := p.timeout
	if req.GetCacheOnly() {
		timeout = min(timeout, CacheOnlyTimeout) // an answer from a cache needs no origin
	}
	bound, suspect := health.bound(timeout), health.whenSuspect()
	select {
	case err := <-accepted:
		if err == nil {
			health.accepted(time.Since(start))
		}
	case <-time.After(bound):
		cancel()
		<-got
		health.timedOut(time.Now())
		return nil, fmt.Errorf("peer %s: %w within %v", addr, ErrNotAccepted, bound)
	}
	f, err := awaitHead(got, alive, suspect, start, timeout)
	if err != nil {
		cancel()
		<-got
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	if f.err != nil {
		cancel()
		return nil, fmt.Errorf("peer %s: %w", addr, f.err)
	}
	head := f.m.GetHead()
	if head == nil {
		cancel()
		return nil, fmt.Errorf("peer %s: stream did not start with a head", addr)
	}
	resp := &http.Response{StatusCode: int(head.GetStatus()), Header: http.Header{}, ContentLength: head.GetSize(),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
	for _, h := range head.GetHeaders() {
		resp.Header[h.GetName()] = h.GetValues()
	}
	if t := head.GetResponseTime(); t != nil {
		resp.Header.Set(FetchedField, t.AsTime().Format(time.RFC3339Nano))
	}
	resp.Header.Del(VouchedField) // only the head says
	if v := head.GetVouchedPurges(); len(v) > 0 {
		resp.Header[VouchedField] = v
	}
	body := &streamBody{stream: stream, cancel: cancel, sum: sha256.New()}
	// Read ahead one chunk and the message after it: a body of one chunk (most
	// objects) is then complete and verified before the caller sees it, so an
	// owner dying mid-stream sends the caller to the origin instead of cutting
	// a client's transfer. Larger bodies keep streaming. A peer that froze
	// after its head gets HeartbeatGap for this, as it would for the head.
	stall := time.AfterFunc(HeartbeatGap, cancel)
	err = body.readAhead()
	if !stall.Stop() {
		err = fmt.Errorf("%w: the body did not follow its head within %v", ErrNotAccepted, HeartbeatGap)
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	resp.Body = body
	return resp, nil
}

// CacheOnlyTimeout bounds a cache-only fetch (a previous owner asked during
// a hand-off): it needs no origin, so a peer that takes longer is skipped.
const CacheOnlyTimeout = 500 * time.Millisecond

// awaitHead waits for the first message after the heartbeats: within
// timeout, with no gap longer than HeartbeatGap (the peer froze after
// it accepted), and until the peer turns suspect.
func awaitHead(got <-chan first, alive <-chan struct{}, suspect <-chan struct{}, start time.Time, timeout time.Duration) (first, error) {
	total := time.NewTimer(timeout - time.Since(start))
	defer total.Stop()
	gap := time.NewTimer(HeartbeatGap)
	defer gap.Stop()
	for {
		select {
		case f := <-got:
			return f, nil
		case <-alive:
			gap.Reset(HeartbeatGap)
		case <-gap.C:
			return first{}, fmt.Errorf("%w: no sign of it for %v while it worked on the head", ErrNotAccepted, HeartbeatGap)
		case <-total.C:
			return first{}, fmt.Errorf("no response head within %v", timeout)
		case <-suspect: // it stopped accepting other fetches meanwhile: it froze
			return first{}, fmt.Errorf("%w while this fetch waited for its head", ErrSuspect)
		}
	}
}

// first is the first message of a fetch stream after the heartbeats.
type first struct {
	m   *peerv1.FetchResponse
	err error
}

// streamBody reads body chunks and checks the end message.
type streamBody struct {
	stream  grpc.ServerStreamingClient[peerv1.FetchResponse]
	cancel  context.CancelFunc
	buf     bytes.Reader
	pending []byte // a chunk just received
	sum     hash.Hash
	n       int64
	done    bool
	err     error
}

func (b *streamBody) Read(p []byte) (int, error) {
	for {
		if b.buf.Len() > 0 {
			return b.buf.Read(p)
		}
		if b.err != nil {
			return 0, b.err
		}
		if b.done {
			return 0, io.EOF
		}
		if err := b.receive(); err != nil {
			b.err = err
			continue
		}
		if b.pending != nil {
			b.buf.Reset(b.pending)
			b.pending = nil
		}
	}
}

// readAhead receives up to two messages into the buffer: a whole small body
// and its end, or the start of a large one.
func (b *streamBody) readAhead() error {
	var ahead []byte
	for range 2 {
		if b.done {
			break
		}
		if err := b.receive(); err != nil {
			return err
		}
		ahead = append(ahead, b.pending...)
		b.pending = nil
	}
	b.buf.Reset(ahead)
	return nil
}

// receive takes the next message: a chunk goes to pending, the end is
// checked.
func (b *streamBody) receive() error {
	m, err := b.stream.Recv()
	switch {
	case errors.Is(err, io.EOF):
		return fmt.Errorf("peer: stream ended before the body did: %w", io.ErrUnexpectedEOF)
	case err != nil:
		return fmt.Errorf("peer: %w", err)
	case m.GetChunk() != nil:
		b.sum.Write(m.GetChunk())
		b.n += int64(len(m.GetChunk()))
		b.pending = m.GetChunk()
	case m.GetEnd() != nil:
		end := m.GetEnd()
		if end.GetSize() != b.n || !bytes.Equal(end.GetSha256(), b.sum.Sum(nil)) {
			return ErrChecksum
		}
		b.done = true
	default:
		return errors.New("peer: unexpected message in body")
	}
	return nil
}

func (b *streamBody) Close() error {
	b.cancel()
	return nil
}

// provenOrLocal reports whether the caller of ctx showed a certificate the
// server verified (mesh TLS), or calls over loopback.
func provenOrLocal(ctx context.Context) bool {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok {
		return false
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
		return true
	}
	ap, err := netip.ParseAddrPort(p.Addr.String())
	return err == nil && ap.Addr().IsLoopback()
}
