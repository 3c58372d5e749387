// Package reqguard holds the limits on client requests that net/http leaves
// to its users: HTTP/1.1 framing that RFC 9112 says to answer by closing the
// connection, and a bound on reading a request body.
//
// net/http accepts a request that carries both Content-Length and
// Transfer-Encoding, processes it by the Transfer-Encoding and drops the
// Content-Length field before a handler sees it; RFC 9112 §6.1 says the
// connection must be closed after the response, since such a request is
// what request smuggling sends. Listen notes, per connection, every header
// section that carries both, so the handler can refuse the request and
// close the connection.
package reqguard

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync/atomic"
)

// maxLine is the longest line scanned; longer ones (a body, an oversized
// field that net/http refuses anyway) are skipped.
const maxLine = 16 << 10

// Listen returns l with each accepted connection watched for ambiguous
// framing. Use ConnContext in the http.Server that serves it.
func Listen(l net.Listener) net.Listener { return listener{l} }

// Wrap watches one connection as Listen's do: for connections that a
// listener of another kind accepted (TLS ones, once their handshake is
// done).
func Wrap(c net.Conn) net.Conn { return &conn{Conn: c} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c}, nil
}

// conn scans what the server reads for HTTP/1 header sections. Reads come
// from the server's one reading goroutine; ambiguous is read by handlers.
type conn struct {
	net.Conn
	line      []byte
	skipping  bool // inside a line longer than maxLine
	inHeader  bool
	cl, te    bool
	ambiguous atomic.Bool
}

// NetConn returns the connection c watches.
func (c *conn) NetConn() net.Conn { return c.Conn }

// ReadFrom hands a response body to the connection itself: writes are not
// watched, and a TCP connection sends a file's pages with sendfile instead of
// copying them through a buffer (net/http's ResponseWriter uses it for a body
// copied from an *os.File, the disk tier's).
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.ambiguous.Load() {
		c.scan(p[:n])
	}
	return n, err
}

func (c *conn) scan(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			c.add(b)
			return
		}
		c.add(b[:i])
		b = b[i+1:]
		if !c.skipping {
			c.endLine(bytes.TrimSuffix(c.line, []byte("\r")))
		}
		c.line, c.skipping = c.line[:0], false
	}
}

func (c *conn) add(b []byte) {
	if c.skipping {
		return
	}
	if len(c.line)+len(b) > maxLine {
		c.skipping, c.inHeader = true, false
		return
	}
	c.line = append(c.line, b...)
}

// endLine follows header sections: a request line opens one, an empty
// line ends it.
func (c *conn) endLine(l []byte) {
	switch {
	case !c.inHeader:
		if requestLine(l) {
			c.inHeader, c.cl, c.te = true, false, false
		}
	case len(l) == 0:
		if c.cl && c.te {
			c.ambiguous.Store(true)
		}
		c.inHeader = false
	case fieldIs(l, "content-length"):
		c.cl = true
	case fieldIs(l, "transfer-encoding"):
		c.te = true
	}
}

// requestLine reports whether l looks like "METHOD target HTTP/1.x".
func requestLine(l []byte) bool {
	sp := bytes.IndexByte(l, ' ')
	return sp > 0 && bytes.HasPrefix(l[bytes.LastIndexByte(l, ' ')+1:], []byte("HTTP/1."))
}

// fieldIs reports whether the field line l is named name (lower case).
func fieldIs(l []byte, name string) bool {
	colon := bytes.IndexByte(l, ':')
	return colon == len(name) && bytes.EqualFold(l[:colon], []byte(name))
}

type connKey struct{}

// ConnContext is http.Server.ConnContext for a server on Listen's
// listener: it lets Ambiguous find the request's connection.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if gc, ok := c.(*conn); ok {
		return context.WithValue(ctx, connKey{}, gc)
	}
	return ctx
}

// Ambiguous reports whether the connection of a request's context has
// carried a header section with both Content-Length and Transfer-Encoding.
func Ambiguous(ctx context.Context) bool {
	c, ok := ctx.Value(connKey{}).(*conn)
	return ok && c.ambiguous.Load()
}
