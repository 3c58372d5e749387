package h1

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"

	"github.com/meshcdn/meshcdn/internal/chanln"
)

// preface opens every HTTP/2 connection (RFC 9113 §3.4); a cleartext one
// that starts with it speaks HTTP/2 with prior knowledge (h2c).
var preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// Sniff accepts cleartext connections and hands each, by its first bytes,
// to the listener of its protocol: HTTP/2 with prior knowledge to H2, the
// others to H1. A connection that sends nothing within timeout is closed.
// Run accepts; Close stops.
type Sniff struct {
	ln      net.Listener
	timeout time.Duration
	h1, h2  *chanln.Listener
	ctx     context.Context
	cancel  context.CancelFunc
}

// NewSniff sniffs ln's connections.
func NewSniff(ln net.Listener, timeout time.Duration) *Sniff {
	ctx, cancel := context.WithCancel(context.Background())
	return &Sniff{ln: ln, timeout: timeout, h1: chanln.New(ln.Addr()), h2: chanln.New(ln.Addr()), ctx: ctx, cancel: cancel}
}

// H1 is the listener of the HTTP/1 connections, H2 of the h2c ones.
func (s *Sniff) H1() net.Listener { return s.h1 }
func (s *Sniff) H2() net.Listener { return s.h2 }

// Addr is the address the connections arrive at.
func (s *Sniff) Addr() net.Addr { return s.ln.Addr() }

// Run accepts until Close; it returns once every sniff has ended.
func (s *Sniff) Run() { chanln.Serve(s.ctx, s.ln, s.sniff) }

// Close stops accepting; H1 and H2 stay open for their servers, whose
// shutdown closes them.
func (s *Sniff) Close() error {
	s.cancel()
	return s.ln.Close()
}

// sniff reads as much of the connection's start as tells HTTP/2's preface
// from anything else, and hands the connection on with those bytes.
func (s *Sniff) sniff(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(s.timeout))
	buf := make([]byte, len(preface))
	n := 0
	for n < len(preface) && bytes.Equal(buf[:n], preface[:n]) {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil && (n == 0 || !errors.Is(err, io.EOF)) {
			_ = c.Close()
			return
		}
		if err != nil {
			break
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	pc := &prefixConn{Conn: c, prefix: buf[:n], remote: c.RemoteAddr().String()}
	if n == len(preface) && bytes.Equal(buf, preface) {
		s.h2.Put(s.ctx, pc)
		return
	}
	s.h1.Put(s.ctx, pc)
}

// prefixConn is a connection whose first bytes were read already.
type prefixConn struct {
	net.Conn
	prefix []byte
	remote string
}

func (c *prefixConn) remoteAddr() string { return c.remote }

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn returns the connection c wraps (the connection limits find
// theirs through it).
func (c *prefixConn) NetConn() net.Conn { return c.Conn }

// ReadFrom hands a response body to the connection itself, so a TCP
// connection sends a file with sendfile.
func (c *prefixConn) ReadFrom(r io.Reader) (int64, error) {
	readFrom := func(r io.Reader) (int64, error) { return io.Copy(struct{ io.Writer }{c.Conn}, r) }
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		readFrom = rf.ReadFrom
	}
	if n, err, ok := sendBody(r, c.Conn, readFrom); ok {
		return n, err
	}
	return readFrom(r)
}

// TLSConn is a TLS connection for the front: fasthttp sees its TLS state,
// and a streamed body leaves piece by piece (ReadFrom) instead of waiting
// in the write buffer.
type TLSConn struct {
	*tls.Conn
	remote string
}

// NewTLSConn is c for the front.
func NewTLSConn(c *tls.Conn) *TLSConn {
	return &TLSConn{Conn: c, remote: c.RemoteAddr().String()}
}

func (c *TLSConn) remoteAddr() string { return c.remote }

// ReadFrom writes each piece read from r to the connection at once.
func (c *TLSConn) ReadFrom(r io.Reader) (int64, error) {
	readFrom := func(r io.Reader) (int64, error) { return io.Copy(struct{ io.Writer }{c.Conn}, r) }
	if n, err, ok := sendBody(r, c.Conn, readFrom); ok {
		return n, err
	}
	return readFrom(r)
}
