package edgetls

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"
)

// Split accepts TLS connections and hands each, once its handshake is done,
// to the server of the protocol it negotiated: an HTTP/2 one to H2 as the
// *tls.Conn that net/http serves as HTTP/2, an HTTP/1.1 one to H1 through
// wrap, so that a reader of the plaintext (reqguard's framing check) sees it.
// ConnContext finds the TLS state of H1's connections again.
type Split struct {
	ln      net.Listener
	cfg     *tls.Config
	wrap    func(net.Conn) net.Conn
	timeout time.Duration
	h1, h2  *chanListener

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewSplit serves the TLS handshake on ln with cfg, each within timeout.
// Run accepts; Close stops.
func NewSplit(ln net.Listener, cfg *tls.Config, wrap func(net.Conn) net.Conn, timeout time.Duration) *Split {
	ctx, cancel := context.WithCancel(context.Background())
	return &Split{ln: ln, cfg: cfg, wrap: wrap, timeout: timeout,
		h1: newChanListener(ln.Addr()), h2: newChanListener(ln.Addr()), ctx: ctx, cancel: cancel}
}

// H1 is the listener of the HTTP/1.1 connections.
func (s *Split) H1() net.Listener { return s.h1 }

// H2 is the listener of the HTTP/2 connections.
func (s *Split) H2() net.Listener { return s.h2 }

// Addr is the address the connections arrive at.
func (s *Split) Addr() net.Addr { return s.ln.Addr() }

// Run accepts connections until Close, each handshake in a goroutine of its
// own; it returns once they have all ended.
func (s *Split) Run() {
	defer s.wg.Wait()
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && s.ctx.Err() == nil {
				// Out of file descriptors or the like: back off as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
				case <-s.ctx.Done():
				}
				continue
			}
			return
		}
		delay = 0
		s.wg.Go(func() { s.handshake(c) })
	}
}

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
		s.h2.put(s.ctx, tc)
		return
	}
	s.h1.put(s.ctx, s.wrap(tc))
}

// Close stops accepting and ends the handshakes in progress. H1 and H2 stay
// open for their servers, whose Shutdown (or Close) closes them; the
// connections already handed on are theirs.
func (s *Split) Close() error {
	s.cancel()
	return s.ln.Close()
}

// chanListener is a net.Listener fed with connections by Split.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// put hands c to the listener's server, or closes it if the listener or
// ctx is closed first.
func (l *chanListener) put(ctx context.Context, c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		_ = c.Close()
	case <-ctx.Done():
		_ = c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) close() { l.once.Do(func() { close(l.closed) }) }

func (l *chanListener) Close() error { l.close(); return nil }

func (l *chanListener) Addr() net.Addr { return l.addr }

type stateKey struct{}

// ConnContext is http.Server.ConnContext for the server of H1: it keeps the
// TLS state of the connection, which State returns.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	for {
		if tc, ok := c.(*tls.Conn); ok {
			st := tc.ConnectionState()
			return context.WithValue(ctx, stateKey{}, &st)
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return ctx
		}
		c = u.NetConn()
	}
}

// State is the TLS state of the connection of a request on H1 (which
// net/http does not put in Request.TLS, as it does not see a *tls.Conn), or
// nil.
func State(ctx context.Context) *tls.ConnectionState {
	st, _ := ctx.Value(stateKey{}).(*tls.ConnectionState)
	return st
}
