package h1

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/meshcdn/meshcdn/node/cache"
)

// bufferLimit is how much of a detached answer is kept before it is sent
// as a stream: an answer shorter than that goes out as one response with
// its length, as an answer from memory does.
const bufferLimit = 32 << 10

// event is what a detached rest tells the handler that waits for it.
type event int

const (
	evDone   event = iota // the rest ended: the answer is whole in fasthttp's response
	evStream              // the header is set and the body streams through the pipe
	evHijack              // the rest took the connection over
	evAbort               // the rest gave up before sending anything: close the connection
)

// stream is the writer of a detached rest. Until it commits, it keeps what
// it is written; then the handler returns and fasthttp sends the body as
// the rest writes it, through a pipe.
type stream struct {
	srv  *Server
	ctx  *fasthttp.RequestCtx
	x    *exchange
	h    http.Header
	code int
	head bool

	first     chan event    // the first of commit, end or hijack, once
	committed bool          // the handler has returned: body is what fasthttp sends
	buf       []byte        // the body until it commits
	body      *body         // the body once committed
	hijacked  chan net.Conn // the connection, once fasthttp hands it over
	hjDone    chan struct{} // closed when the rest is done with it
	hjc       *hijackedConn
}

// detached runs the pipeline's rest on a goroutine and waits until it has
// an answer to send: whole, or the header of one that streams. The
// exchange is released when the rest ends.
func (s *Server) detached(ctx *fasthttp.RequestCtx, x *exchange) {
	st := &stream{srv: s, ctx: ctx, x: x, h: x.w.h, head: x.w.head, first: make(chan event, 1)}
	rest := x.w.rest
	go func() {
		ev := evDone
		defer func() {
			if p := recover(); p != nil {
				if p != http.ErrAbortHandler {
					s.cfg.Logger.Error("request handler panicked", "panic", p)
				}
				ev = evAbort
			}
			st.end(ev)
			x.release()
		}()
		rest(st)
	}()
	switch <-st.first {
	case evHijack:
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) {
			st.hijacked <- c
			<-st.hjDone
		})
	case evAbort:
		// Nothing was sent: the connection closes without an answer, as
		// net/http's does when a handler aborts.
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(net.Conn) {})
	}
}

func (st *stream) Header() http.Header { return st.h }

func (st *stream) WriteHeader(code int) {
	if st.code != 0 || code < 200 {
		return
	}
	st.code = code
}

func (st *stream) Write(p []byte) (int, error) {
	if st.code == 0 {
		st.WriteHeader(http.StatusOK)
	}
	if st.head {
		return len(p), nil
	}
	if !st.committed && len(st.buf)+len(p) <= bufferLimit {
		st.buf = append(st.buf, p...)
		return len(p), nil
	}
	if !st.committed {
		st.commit()
	}
	n, err := st.body.send(&segment{p: p})
	return int(n), err
}

// ReadFrom sends r's bytes: a disk object's file goes from the file to
// the socket with sendfile.
func (st *stream) ReadFrom(r io.Reader) (int64, error) {
	if st.code == 0 {
		st.WriteHeader(http.StatusOK)
	}
	if st.head {
		return io.Copy(io.Discard, r)
	}
	if !st.committed {
		st.commit()
	}
	return st.body.send(&segment{r: r})
}

// WriteRegion is cache.RegionWriter's: a body off the heap goes from its
// memory file to a TCP connection with sendfile.
func (st *stream) WriteRegion(r *cache.Region) (int64, error) {
	if st.head {
		if st.code == 0 {
			st.WriteHeader(http.StatusOK)
		}
		return r.Len(), nil
	}
	return st.ReadFrom(r)
}

// Flush sends what is kept and streams the rest.
func (st *stream) Flush() {
	if st.code == 0 {
		st.WriteHeader(http.StatusOK)
	}
	if !st.committed && !st.head {
		st.commit()
	}
}

// FlushError is Flush for http.ResponseController.
func (st *stream) FlushError() error {
	st.Flush()
	return nil
}

// commit hands the header and the body to fasthttp, which sends the body
// as it comes; what was kept goes first.
func (st *stream) commit() {
	size := -1 // chunked
	if v := st.h.Get("Content-Length"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			size = n
		}
	}
	st.ctx.Response.SetStatusCode(st.code)
	copyFields(&st.ctx.Response.Header, st.h, false)
	st.body = &body{conn: st.ctx.Conn(), size: int64(size), kept: st.buf, segs: make(chan *segment), gone: make(chan struct{})}
	st.buf = nil
	// The header leaves at once; the body then goes to the connection
	// piece by piece (see body.WriteTo).
	st.ctx.Response.ImmediateHeaderFlush = true
	st.ctx.Response.SetBodyStream(st.body, size)
	st.committed = true
	st.first <- evStream
}

// end finishes the answer when the rest returns: whole in fasthttp's
// response if it never committed, else by ending the body (with an error
// for a rest that aborted, which fasthttp turns into a cut connection).
func (st *stream) end(ev event) {
	if st.hijacked != nil {
		_ = st.hjc.Close() // the rest is done with the connection
		return
	}
	if st.committed {
		st.body.aborted = ev == evAbort
		close(st.body.segs)
		return
	}
	if ev == evDone {
		if st.code == 0 {
			st.code = http.StatusOK
		}
		st.ctx.Response.SetStatusCode(st.code)
		copyFields(&st.ctx.Response.Header, st.h, st.head)
		st.ctx.Response.SetBody(st.buf)
	}
	st.first <- ev
}

// errAborted cuts a response whose rest gave up midway.
var errAborted = errors.New("h1: the response was aborted")

// Hijack hands the connection over to the rest (a WebSocket through the
// bypass), before anything was written.
func (st *stream) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if st.committed || st.code != 0 || st.hijacked != nil {
		return nil, nil, errors.New("h1: hijack after the response started")
	}
	st.hijacked, st.hjDone = make(chan net.Conn), make(chan struct{})
	st.first <- evHijack
	c := <-st.hijacked
	hc := &hijackedConn{Conn: c, done: st.hjDone}
	if cs := st.srv.cfg.ConnState; cs != nil {
		// fasthttp reports no end of a connection it handed over; it is
		// told by the connection fasthttp served (c wraps it).
		served := st.ctx.Conn()
		hc.closed = func() { cs(served, http.StateClosed) }
	}
	st.hjc = hc
	return hc, bufio.NewReadWriter(bufio.NewReader(hc), bufio.NewWriter(hc)), nil
}

// hijackedConn tells fasthttp's hijack handler when the rest closed it.
type hijackedConn struct {
	net.Conn
	once   sync.Once
	done   chan struct{}
	closed func() // tells ConnState the connection is closed
}

func (c *hijackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if c.closed != nil {
			c.closed()
		}
		close(c.done)
	})
	return err
}

// SetReadDeadline and SetWriteDeadline are http.ResponseController's:
// they bound the connection's reads (the request body) and writes.
func (st *stream) SetReadDeadline(t time.Time) error  { return st.ctx.SetReadDeadline(t) }
func (st *stream) SetWriteDeadline(t time.Time) error { return st.ctx.SetWriteDeadline(t) }

// body is what fasthttp sends of a committed stream: what was kept, then
// the pieces the rest sends, one at a time: bytes, or a reader to copy (a
// disk object's file). fasthttp reads it (Read), or hands it to the
// connection's ReadFrom, which sends the pieces itself (sendTo), a file
// with sendfile. Its Close (fasthttp's, once the response is sent or the
// connection failed) makes the rest's next send fail, so the rest ends.
type body struct {
	conn    net.Conn // the client's, which WriteTo writes to
	size    int64    // the Content-Length, -1 for a chunked body
	kept    []byte
	segs    chan *segment // closed when the rest ends
	aborted bool          // set before segs closes: the rest gave up
	gone    chan struct{} // closed by Close
	once    sync.Once
	cur     *segment // the piece Read is in
}

// segment is one piece of a body, and its outcome.
type segment struct {
	p    []byte
	r    io.Reader
	n    int64
	err  error
	done chan struct{}
}

// send hands seg to fasthttp's side and waits until it is sent.
func (b *body) send(seg *segment) (int64, error) {
	seg.done = make(chan struct{})
	select {
	case b.segs <- seg:
	case <-b.gone:
		return 0, errClientGone
	}
	<-seg.done // every segment taken is finished, also by Close
	return seg.n, seg.err
}

// next is the piece to send next; ok false at the end of the body, with
// the error of a rest that aborted.
func (b *body) next() (seg *segment, err error) {
	if b.cur != nil {
		return b.cur, nil
	}
	seg, ok := <-b.segs
	if !ok {
		if b.aborted {
			return nil, errAborted
		}
		return nil, io.EOF
	}
	b.cur = seg
	return seg, nil
}

// finish ends the current piece with err.
func (b *body) finish(err error) {
	b.cur.err = err
	close(b.cur.done)
	b.cur = nil
}

func (b *body) Read(p []byte) (int, error) {
	if len(b.kept) > 0 {
		n := copy(p, b.kept)
		b.kept = b.kept[n:]
		return n, nil
	}
	for {
		seg, err := b.next()
		if err != nil {
			return 0, err
		}
		if seg.r == nil {
			n := copy(p, seg.p[seg.n:])
			seg.n += int64(n)
			if seg.n == int64(len(seg.p)) {
				b.finish(nil)
			}
			return n, nil
		}
		n, err := seg.r.Read(p)
		seg.n += int64(n)
		switch {
		case errors.Is(err, io.EOF):
			b.finish(nil)
			if n == 0 {
				continue
			}
		case err != nil:
			b.finish(err)
			return n, err
		}
		return n, nil
	}
}

// SupportsBodyWriteTo and WriteTo are fasthttp's BodyWriterTo: fasthttp
// hands the body its writer instead of reading it. A body of known length
// goes to the connection itself, each piece as it comes: bytes with Write,
// a reader with the connection's ReadFrom (a TCP connection's sends a file
// with sendfile). fasthttp flushed the header first (the stream sets
// ImmediateHeaderFlush) and has nothing of the body in its buffer. A
// chunked body goes through w, which frames and flushes each piece.
func (b *body) SupportsBodyWriteTo() bool { return true }

func (b *body) WriteTo(w io.Writer) (int64, error) {
	if b.size >= 0 {
		w = b.conn
	}
	var total int64
	send := func(p []byte, r io.Reader) (int64, error) {
		if b.size >= 0 {
			left := b.size - total
			if int64(len(p)) > left {
				return 0, errBodyTooLong
			}
			if rg, ok := r.(*cache.Region); ok {
				if rg.Len() > left {
					return 0, errBodyTooLong
				}
				return sendRegion(rg, b.conn, w)
			}
			if lr, ok := r.(*io.LimitedReader); ok {
				lr.N = min(lr.N, left) // kept as it is: sendfile sees the file under it
			} else if r != nil {
				r = io.LimitReader(r, left)
			}
		}
		if r == nil {
			n, err := w.Write(p)
			return int64(n), err
		}
		if rf, ok := w.(io.ReaderFrom); ok {
			return rf.ReadFrom(r)
		}
		return io.Copy(w, r)
	}
	if len(b.kept) > 0 {
		n, err := send(b.kept, nil)
		total += n
		b.kept = nil
		if err != nil {
			return total, err
		}
	}
	// The body ends when the rest does, not at its last byte: as with
	// net/http's handlers, the connection's next request is read only
	// once the rest is done, so it finds what the rest stored (a fill
	// commits after its last byte went out).
	for {
		seg, err := b.next()
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		seg.n, err = send(seg.p, seg.r)
		total += seg.n
		b.finish(err)
		if err != nil {
			return total, err
		}
	}
}

func (b *body) Close() error {
	b.once.Do(func() {
		close(b.gone)
		if b.cur != nil {
			b.finish(errClientGone)
		}
	})
	return nil
}

// errClientGone ends a rest whose response fasthttp no longer sends;
// errBodyTooLong a rest that sends more than its Content-Length.
var (
	errClientGone  = errors.New("h1: the client connection is gone")
	errBodyTooLong = errors.New("h1: the response body is longer than its Content-Length")
)
