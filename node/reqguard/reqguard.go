// Package reqguard holds the limits on client requests that net/http leaves
// to its users: HTTP/1 framing that RFC 9112 says to answer by closing the
// connection, and a bound on reading a request body.
//
// net/http frames some requests in ways RFC 9112 forbids a server to rely
// on. A request that carries both Content-Length and Transfer-Encoding is
// processed by the Transfer-Encoding, and its Content-Length is dropped
// before a handler sees it; an HTTP/1.0 request's Transfer-Encoding is
// dropped and its body read by Content-Length. Both are what request
// smuggling sends, and RFC 9112 §6.1 says to treat the framing as faulty
// and close the connection. Listen notes, per connection, the first header
// section whose framing is faulty, so the handler can refuse the request
// and close the connection (Faulty). A Transfer-Encoding other than one
// "chunked" line in HTTP/1.1 net/http refuses itself, with a canned 501 on
// the connection; RFC 9112 §6.3 asks for 400 when chunked is not the final
// coding, so the connection answers 400 instead, one answer for every
// faulty framing.
package reqguard

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
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
// from the server's one reading goroutine; faulty and refusedTE are read by
// handlers and writes.
type conn struct {
	net.Conn
	mu        sync.Mutex
	deadline  time.Time     // the read deadline, as last set
	wake      chan struct{} // closed when the read deadline changes or the connection closes
	closed    bool
	line      []byte
	skipping  bool // inside a line longer than maxLine
	inHeader  bool
	http10    bool // the section's request line says HTTP/1.0
	cl        bool
	te        int  // Transfer-Encoding lines
	chunked   bool // the last one is exactly "chunked"
	faulty    atomic.Pointer[string]
	refusedTE atomic.Bool // net/http will refuse a section's Transfer-Encoding (501)
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
	if n > 0 && c.faulty.Load() == nil {
		c.scan(p[:n])
	}
	if n == 0 && err == io.EOF && len(p) == 1 {
		return 0, c.holdEOF()
	}
	return n, err
}

// holdEOF keeps the end of a client's stream from net/http while it serves
// a request. The server reads one byte at a time only while a handler runs
// (connReader.backgroundRead, which watches for the client leaving), and an
// EOF there cancels the request's context: a client that half-closes its
// side after sending the request, as RFC 9112 §9.6 allows, would get an
// empty response that looks complete. The EOF is held until the server
// aborts that read when the handler is done (it sets a read deadline in the
// past) or the connection closes; a client that has really gone is noticed
// by the writes that fail. The server's next read, of the next request,
// gets the EOF.
func (c *conn) holdEOF() error {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return net.ErrClosed
		}
		d := c.deadline
		wake := make(chan struct{})
		c.wake = wake
		c.mu.Unlock()
		if d.IsZero() {
			<-wake
			continue
		}
		wait := time.Until(d)
		if wait <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(wait)
		select {
		case <-wake:
			t.Stop()
		case <-t.C:
			return os.ErrDeadlineExceeded
		}
	}
}

// wakeLocked ends a holdEOF's wait, for it to look again.
func (c *conn) wakeLocked() {
	if c.wake != nil {
		close(c.wake)
		c.wake = nil
	}
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.noteDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) SetDeadline(t time.Time) error {
	c.noteDeadline(t)
	return c.Conn.SetDeadline(t)
}

// noteDeadline records a new read deadline for holdEOF, and wakes it.
func (c *conn) noteDeadline(t time.Time) {
	c.mu.Lock()
	c.deadline = t
	c.wakeLocked()
	c.mu.Unlock()
}

func (c *conn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.wakeLocked()
	c.mu.Unlock()
	return c.Conn.Close()
}

// unsupportedTE is how net/http's answer to a Transfer-Encoding it refuses
// begins, written to the connection in one write before it closes it.
var unsupportedTE = []byte("HTTP/1.1 501 Not Implemented\r\n")

// badFraming replaces that answer.
var badFraming = func() []byte {
	const msg = "meshcdn: the request's Transfer-Encoding is not accepted (one chunked line only)\n"
	return fmt.Appendf(nil, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"+
		"Connection: close\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
}()

func (c *conn) Write(p []byte) (int, error) {
	if c.refusedTE.Load() && bytes.HasPrefix(p, unsupportedTE) && bytes.HasSuffix(p, []byte("Unsupported transfer encoding")) {
		if _, err := c.Conn.Write(badFraming); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
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
		if ok, http10 := requestLine(l); ok {
			c.inHeader, c.http10, c.cl, c.te, c.chunked = true, http10, false, 0, false
		}
	case len(l) == 0:
		c.inHeader = false
		switch {
		case c.te > 0 && c.http10:
			c.fault("Transfer-Encoding in an HTTP/1.0 request")
		case c.te > 0 && c.cl:
			c.fault("both Content-Length and Transfer-Encoding")
		}
		if c.te > 0 && !c.http10 && (c.te > 1 || !c.chunked) {
			c.refusedTE.Store(true)
		}
	case fieldIs(l, "content-length"):
		c.cl = true
	case fieldIs(l, "transfer-encoding"):
		c.te++
		v := bytes.TrimSpace(l[len("transfer-encoding")+1:])
		c.chunked = bytes.EqualFold(v, []byte("chunked"))
	}
}

func (c *conn) fault(why string) {
	c.faulty.CompareAndSwap(nil, &why)
}

// requestLine reports whether l looks like "METHOD target HTTP/1.x", and
// whether x is 0.
func requestLine(l []byte) (ok, http10 bool) {
	version := l[bytes.LastIndexByte(l, ' ')+1:]
	if bytes.IndexByte(l, ' ') <= 0 || !bytes.HasPrefix(version, []byte("HTTP/1.")) {
		return false, false
	}
	return true, string(version) == "HTTP/1.0"
}

// fieldIs reports whether the field line l is named name (lower case).
func fieldIs(l []byte, name string) bool {
	colon := bytes.IndexByte(l, ':')
	return colon == len(name) && bytes.EqualFold(l[:colon], []byte(name))
}

type connKey struct{}

// ConnContext is http.Server.ConnContext for a server on Listen's
// listener: it lets Faulty find the request's connection.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if gc, ok := c.(*conn); ok {
		return context.WithValue(ctx, connKey{}, gc)
	}
	return ctx
}

// Faulty says why the framing of a header section that the connection of
// a request's context carried is faulty (RFC 9112 §6.1): Content-Length
// with Transfer-Encoding, or Transfer-Encoding in HTTP/1.0; "" when none
// was. A connection that carried one is answered 400 and closed, the
// requests read before it on that connection included.
func Faulty(ctx context.Context) string {
	c, ok := ctx.Value(connKey{}).(*conn)
	if !ok {
		return ""
	}
	if why := c.faulty.Load(); why != nil {
		return *why
	}
	return ""
}
