package edgetls

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"github.com/meshcdn/meshcdn/internal/chanln"
)

// Split accepts TLS connections and hands each, once its handshake is done,
// to the server of the protocol it negotiated: an HTTP/2 one to H2 as the
// *tls.Conn that net/http serves as HTTP/2, an HTTP/1.1 one to H1 through
// wrap (the HTTP/1.1 front's own view of a TLS connection).
type Split struct {
	ln      net.Listener
	cfg     *tls.Config
	wrap    func(net.Conn) net.Conn
	timeout time.Duration
	h1, h2  *chanln.Listener

	ctx    context.Context
	cancel context.CancelFunc
}

// NewSplit serves the TLS handshake on ln with cfg, each within timeout.
// Run accepts; Close stops.
func NewSplit(ln net.Listener, cfg *tls.Config, wrap func(net.Conn) net.Conn, timeout time.Duration) *Split {
	ctx, cancel := context.WithCancel(context.Background())
	return &Split{ln: ln, cfg: cfg, wrap: wrap, timeout: timeout,
		h1: chanln.New(ln.Addr()), h2: chanln.New(ln.Addr()), ctx: ctx, cancel: cancel}
}

// H1 is the listener of the HTTP/1.1 connections.
func (s *Split) H1() net.Listener { return s.h1 }

// H2 is the listener of the HTTP/2 connections.
func (s *Split) H2() net.Listener { return s.h2 }

// Addr is the address the connections arrive at.
func (s *Split) Addr() net.Addr { return s.ln.Addr() }

// Run accepts connections until Close, each handshake in a goroutine of its
// own; it returns once they have all ended.
func (s *Split) Run() { chanln.Serve(s.ctx, s.ln, s.handshake) }

// handshake completes one connection's handshake and hands it on.
func (s *Split) handshake(c net.Conn) {
	tc := tls.Server(c, s.cfg)
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		return
	}
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		s.h2.Put(s.ctx, tc)
		return
	}
	s.h1.Put(s.ctx, s.wrap(tc))
}

// Close stops accepting and ends the handshakes in progress. H1 and H2 stay
// open for their servers, whose Shutdown (or Close) closes them; the
// connections already handed on are theirs.
func (s *Split) Close() error {
	s.cancel()
	return s.ln.Close()
}
