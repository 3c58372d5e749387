// Package h3 is the HTTP/3 front: HTTP/3 over QUIC (github.com/quic-go/quic-go)
// on the UDP port of the HTTPS address, with the HTTPS listener's
// certificates and session tickets, handing every request to the same
// pipeline as the other fronts.
//
// 0-RTT is off unless asked for; with it on, only GET and HEAD are taken in
// early data: any other method sent before the handshake completed gets
// 425 Too Early (RFC 8470 §5.2), and the client sends it again once the
// handshake is done. A GET or HEAD in early data is marked (package
// earlydata): the pipeline answers it from the cache at once, but waits
// for the handshake before it goes to a peer or the origin.
package h3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/meshcdn/meshcdn/node/earlydata"
)

// Config configures a Server.
type Config struct {
	// Handler is the pipeline.
	Handler http.Handler
	// TLS is the HTTPS listener's configuration; the server uses a copy
	// that offers h3 and TLS 1.3 alone (QUIC has no other).
	TLS *tls.Config
	// ZeroRTT accepts GET and HEAD requests in 0-RTT early data.
	ZeroRTT bool
	// AdvertisedPort is the port AltSvc names; 0 names the bound one.
	AdvertisedPort int
	// IdleTimeout closes a connection idle for that long; MaxHeaderBytes
	// bounds a request's header section.
	IdleTimeout    time.Duration
	MaxHeaderBytes int
	Logger         *slog.Logger
}

// Server serves HTTP/3 on one UDP socket.
type Server struct {
	srv        *http3.Server
	tls        *tls.Config
	conn       net.PacketConn
	advertised int
}

// New returns a server of cfg; Listen binds it.
func New(cfg Config) *Server {
	t := cfg.TLS.Clone()
	t.MinVersion = tls.VersionTLS13
	t.NextProtos = []string{http3.NextProtoH3}
	// http3.Server serves a copy of t made when it starts: tickets are
	// sealed and opened through t itself, so the keys the mesh sets on t
	// later (TLSConfig) are the ones in use.
	t.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) { return t.EncryptTicket(cs, ss) }
	t.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		return t.DecryptTicket(identity, cs)
	}
	h := cfg.Handler
	var connContext func(context.Context, *quic.Conn) context.Context
	if cfg.ZeroRTT {
		h = tooEarly(h)
		connContext = func(ctx context.Context, c *quic.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{tls: t, advertised: cfg.AdvertisedPort, srv: &http3.Server{
		TLSConfig:      t,
		QUICConfig:     &quic.Config{Allow0RTT: cfg.ZeroRTT, MaxIdleTimeout: cfg.IdleTimeout},
		Handler:        h,
		ConnContext:    connContext,
		IdleTimeout:    cfg.IdleTimeout,
		MaxHeaderBytes: cfg.MaxHeaderBytes,
		Logger:         log,
	}}
}

// TLSConfig is the server's TLS configuration, for rotating its session
// ticket keys with the HTTPS listener's.
func (s *Server) TLSConfig() *tls.Config { return s.tls }

// Listen binds the UDP port of addr, the HTTPS listener's bound address.
func (s *Server) Listen(addr string) error {
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("http3: %w", err)
	}
	s.conn = c
	return nil
}

// Addr is the bound UDP address.
func (s *Server) Addr() net.Addr { return s.conn.LocalAddr() }

// AltSvc is the Alt-Svc field value that announces the server to clients of
// the HTTPS listener (RFC 7838): HTTP/3 on the same port, or the advertised
// one, for a day.
func (s *Server) AltSvc() string {
	port := s.advertised
	if a, ok := s.conn.LocalAddr().(*net.UDPAddr); ok && port == 0 {
		port = a.Port
	}
	return `h3=":` + strconv.Itoa(port) + `"; ma=86400`
}

// Serve serves the bound socket until Shutdown.
func (s *Server) Serve() error {
	err := s.srv.Serve(s.conn)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, quic.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops taking connections, lets requests in flight finish until
// ctx ends, then closes everything, the socket included.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if cerr := s.srv.Close(); err == nil && cerr != nil && !errors.Is(cerr, http.ErrServerClosed) {
		err = cerr
	}
	_ = s.conn.Close()
	return err
}

// connKey is the context key of a request's QUIC connection.
type connKey struct{}

// tooEarly answers 425 to a request sent in 0-RTT early data unless its
// method is GET or HEAD, and marks a GET or HEAD sent so with a wait for
// its connection's handshake.
func tooEarly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || r.TLS.HandshakeComplete {
			h.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusTooEarly)
			_, _ = w.Write([]byte("meshcdn: a " + r.Method + " request is not taken in 0-RTT early data: send it again\n"))
			return
		}
		c, ok := r.Context().Value(connKey{}).(*quic.Conn)
		if !ok {
			// Not from this package's server: take no risk.
			w.WriteHeader(http.StatusTooEarly)
			return
		}
		h.ServeHTTP(w, r.WithContext(earlydata.With(r.Context(), func(ctx context.Context) error {
			select {
			case <-c.HandshakeComplete():
				return nil
			case <-c.Context().Done():
				return earlydata.ErrHandshake
			case <-ctx.Done():
				return ctx.Err()
			}
		})))
	})
}
