package h1

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
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
	bare    func(net.Conn) net.Conn
	h1, h2  *chanln.Listener
	ctx     context.Context
	cancel  context.CancelFunc
}

// NewSniff sniffs ln's connections. bare, when not nil, turns a connection
// of ln into the TCP connection under it for H1 (see Sniff.sniff).
func NewSniff(ln net.Listener, timeout time.Duration, bare func(net.Conn) net.Conn) *Sniff {
	ctx, cancel := context.WithCancel(context.Background())
	return &Sniff{ln: ln, timeout: timeout, bare: bare, h1: chanln.New(ln.Addr()), h2: chanln.New(ln.Addr()), ctx: ctx, cancel: cancel}
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

// sniff looks at as much of the connection's start as tells HTTP/2's
// preface from anything else, and hands the connection on. It peeks when it
// can, leaving the bytes where they are: an HTTP/1 connection then goes to
// H1 as the TCP connection itself (bare), on which fasthttp sends a
// response's header and body with one writev (a wrapped connection costs a
// second write for a body longer than its buffer). A start too short to
// tell is read, and replayed to the server (prefixConn).
func (s *Sniff) sniff(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(s.timeout))
	buf := make([]byte, len(preface))
	if n, err := peek(c, buf); err == nil && (n == len(preface) || !bytes.Equal(buf[:n], preface[:n])) {
		_ = c.SetReadDeadline(time.Time{})
		if bytes.Equal(buf[:n], preface) {
			s.h2.Put(s.ctx, c)
			return
		}
		if s.bare != nil {
			c = s.bare(c)
		}
		s.h1.Put(s.ctx, c)
		return
	} else if err != nil && !errors.Is(err, errNoPeek) {
		_ = c.Close()
		return
	}
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

// errNoPeek: the connection offers no way to peek at its bytes.
var errNoPeek = errors.New("h1: cannot peek")

// peek reads the connection's first bytes into buf without taking them:
// at most len(buf), as many as have arrived once any have (0 at the
// connection's end), within the read deadline.
func peek(c net.Conn, buf []byte) (int, error) {
	for range 8 {
		if sc, ok := c.(syscall.Conn); ok {
			rc, err := sc.SyscallConn()
			if err != nil {
				return 0, err
			}
			var n int
			var rerr error
			err = rc.Read(func(fd uintptr) bool {
				n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK)
				return !errors.Is(rerr, syscall.EAGAIN)
			})
			if err == nil {
				err = rerr
			}
			return max(n, 0), err
		}
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = w.NetConn()
	}
	return 0, errNoPeek
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
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// TLSConn is a TLS connection for the front: fasthttp sees its TLS state,
// and what is handed to ReadFrom is written as it is read instead of
// waiting in fasthttp's write buffer.
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
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}
