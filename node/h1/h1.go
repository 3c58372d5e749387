// Package h1 is the edge's HTTP/1.1 front, on fasthttp: it parses
// requests (with fasthttp's limits and framing checks, and the ones RFC
// 9112 adds), hands each to the request pipeline as an *http.Request with
// an http.ResponseWriter, and renders what the pipeline writes. An answer
// from memory is written on fasthttp's own goroutine; the pipeline hands
// anything that may stream to Writer.Detach, which runs it on a goroutine
// of its own whose body fasthttp sends as it comes.
package h1

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Config is what a front is built from.
type Config struct {
	// Handler is the pipeline. A ResponseWriter it gets implements
	// pipeline.Detacher.
	Handler http.Handler
	Logger  *slog.Logger
	// ConnState, when set, is told of every connection's state changes, as
	// net/http's is (the connection limits).
	ConnState func(net.Conn, http.ConnState)
	// HeaderTimeout bounds the reading of a request's header section;
	// IdleTimeout the wait for the next request on a kept-alive
	// connection. Defaults 10s and 2m.
	HeaderTimeout, IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's header section: beyond it, 431.
	// Default 64 KiB.
	MaxHeaderBytes int
}

// Server serves HTTP/1.1 connections.
type Server struct {
	cfg Config
	srv *fasthttp.Server

	mu      sync.Mutex
	lns     []net.Listener
	stopped bool
}

// New builds a front; Serve serves a listener's connections.
func New(cfg Config) *Server {
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 64 << 10
	}
	s := &Server{cfg: cfg}
	s.srv = &fasthttp.Server{
		Handler:                       s.serve,
		ErrorHandler:                  s.refuse,
		Name:                          "",
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		NoDefaultDate:                 false,
		DisablePreParseMultipartForm:  true,
		StreamRequestBody:             true,
		DisableHeaderNamesNormalizing: false,
		ReadBufferSize:                cfg.MaxHeaderBytes + 4<<10,
		WriteBufferSize:               16 << 10,
		ReadTimeout:                   cfg.HeaderTimeout,
		IdleTimeout:                   cfg.IdleTimeout,
		// With StreamRequestBody, a body longer than this streams to the
		// handler instead of being read whole first (under the header's
		// timeout): every body streams, and the pipeline bounds it in time.
		MaxRequestBodySize:    1,
		CloseOnShutdown:       true,
		SecureErrorLogMessage: true,
		Logger:                logger{cfg.Logger},
	}
	if cfg.ConnState != nil {
		s.srv.ConnState = func(c net.Conn, st fasthttp.ConnState) {
			if hs, ok := connStates[st]; ok {
				cfg.ConnState(c, hs)
			}
		}
	}
	return s
}

// connStates are fasthttp's connection states as net/http names them.
var connStates = map[fasthttp.ConnState]http.ConnState{
	fasthttp.StateNew: http.StateNew, fasthttp.StateActive: http.StateActive, fasthttp.StateIdle: http.StateIdle,
	fasthttp.StateHijacked: http.StateHijacked, fasthttp.StateClosed: http.StateClosed,
}

// Serve serves ln's connections until Shutdown; it returns nil then.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	err := s.srv.Serve(ln)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, closes idle connections and waits for the
// requests in progress until ctx ends; then it closes every connection.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	for _, ln := range s.lns {
		_ = ln.Close() // also when fasthttp has not registered it yet
	}
	s.mu.Unlock()
	return s.srv.ShutdownWithContext(ctx)
}

// refuse answers a request fasthttp could not read: 431 for a header
// section too large, 400 for anything else, and the connection closes.
func (s *Server) refuse(ctx *fasthttp.RequestCtx, err error) {
	code, msg, detail := http.StatusBadRequest, "meshcdn: malformed request", "malformed"
	var big *fasthttp.ErrSmallBuffer
	switch {
	case errors.As(err, &big):
		code, msg, detail = http.StatusRequestHeaderFieldsTooLarge, "meshcdn: the request's header fields are too large", "header-too-large"
	case errors.Is(err, fasthttp.ErrUnsupportedTransferEncoding):
		msg, detail = "meshcdn: the request's Transfer-Encoding is not accepted (one chunked line only)", "ambiguous-framing"
	}
	s.cfg.Logger.Debug("refused a request that does not parse", "client", ctx.RemoteAddr().String(), "err", err)
	edgeAnswer(&ctx.Response, code, msg, detail)
	ctx.SetConnectionClose()
}

// edgeAnswer is a plain-text answer of the front's own.
func edgeAnswer(resp *fasthttp.Response, code int, msg, detail string) {
	resp.Reset()
	resp.SetStatusCode(code)
	resp.Header.SetContentType("text/plain; charset=utf-8")
	resp.Header.Set("Age", "0")
	resp.Header.Set("Via", "1.1 meshcdn")
	resp.Header.Set("Cache-Status", "meshcdn; detail="+detail)
	resp.SetBodyString(msg + "\n")
}

// faulty says why a request's framing is faulty beyond what fasthttp
// refuses itself (RFC 9112 §6.1, §6.3), or "": fasthttp frames a request
// with both Content-Length and Transfer-Encoding by the latter and serves
// it, which request smuggling relies on, and takes "identity" as no
// coding. Any Transfer-Encoding but one "chunked" line is refused. A GET
// or HEAD without a Content-Length or a chunked body (the common request)
// is not looked at again.
func faulty(h *fasthttp.RequestHeader) string {
	if h.ContentLength() == -2 && (h.IsGet() || h.IsHead()) {
		return ""
	}
	var te, cl int
	chunked := false
	for raw := h.RawHeaders(); len(raw) > 0; {
		var line []byte
		line, raw, _ = bytes.Cut(raw, []byte("\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		switch {
		case bytes.EqualFold(bytes.TrimSpace(name), []byte("Content-Length")):
			cl++
		case bytes.EqualFold(bytes.TrimSpace(name), []byte("Transfer-Encoding")):
			te++
			chunked = bytes.EqualFold(bytes.TrimSpace(value), []byte("chunked"))
		}
	}
	switch {
	case te > 0 && cl > 0:
		return "both Content-Length and Transfer-Encoding"
	case te > 1 || te == 1 && !chunked:
		return "a Transfer-Encoding other than one chunked line"
	}
	return ""
}

// logger sends fasthttp's own log lines to slog at Debug: they are about
// clients that misbehave.
type logger struct{ l *slog.Logger }

func (l logger) Printf(format string, args ...any) {
	if l.l.Enabled(context.Background(), slog.LevelDebug) {
		l.l.Debug("http/1.1 front", "msg", fmt.Sprintf(format, args...))
	}
}
