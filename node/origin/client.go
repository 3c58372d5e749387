package origin

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshcdn/meshcdn/node/httpcache"
	"github.com/valyala/fasthttp"
)

// Config tunes the connections to origins. Zero fields take their defaults.
type Config struct {
	// DialTimeout bounds a TCP connect and, for https, the TLS handshake.
	// Default 10s.
	DialTimeout time.Duration
	// HeaderTimeout bounds the wait for response headers once the request
	// is sent. Default 30s.
	HeaderTimeout time.Duration
	// MaxIdlePerHost is the keep-alive pool size per origin server (and TLS
	// server name). Default 64.
	MaxIdlePerHost int
	// RootCAs verifies https origins. Nil: the system's roots.
	RootCAs *x509.CertPool
}

func (c Config) withDefaults() Config {
	if c.DialTimeout <= 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.HeaderTimeout <= 0 {
		c.HeaderTimeout = 30 * time.Second
	}
	if c.MaxIdlePerHost <= 0 {
		c.MaxIdlePerHost = 64
	}
	return c
}

// idleTimeout closes a keep-alive origin connection unused for this long.
const idleTimeout = 90 * time.Second

// maxTLSNames bounds the connection pools kept per TLS server name (a
// wildcard site may see many names); past it, a request gets a connection
// of its own, closed after it.
const maxTLSNames = 1024

// Transports carries all origin traffic over HTTP/1.1 on fasthttp's client
// connections: a keep-alive pool per origin server, and for https one per
// server name, so a connection verified for one name is never reused for
// another. It is an http.RoundTripper: the pools' fills and the bypass
// proxy send through it, response bodies stream as they arrive, and
// request bodies are streamed to the origin, never buffered whole.
type Transports struct {
	cfg    Config
	dialer net.Dialer
	mu     sync.Mutex
	hosts  map[hostKey]*fasthttp.HostClient
	names  int // https pools, bounded by maxTLSNames
}

// hostKey names one connection pool: the server's address and, for https,
// the server name verified.
type hostKey struct {
	addr string
	name string // "" for plain http
}

// NewTransports returns the origin transports.
func NewTransports(cfg Config) *Transports {
	cfg = cfg.withDefaults()
	return &Transports{cfg: cfg, dialer: net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second},
		hosts: map[hostKey]*fasthttp.HostClient{}}
}

type sniKey struct{}

// WithServerName asks for an https request to present name as SNI and to
// verify the origin's certificate against it.
func WithServerName(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, sniKey{}, name)
}

// CloseIdleConnections closes every idle origin connection.
func (ts *Transports) CloseIdleConnections() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, hc := range ts.hosts {
		hc.CloseIdleConnections()
	}
}

// host returns the connection pool for req's server, creating it; owned
// reports that the pool is the request's alone (past maxTLSNames).
func (ts *Transports) host(req *http.Request) (hc *fasthttp.HostClient, owned bool, err error) {
	name, _ := req.Context().Value(sniKey{}).(string)
	return ts.hostOf(req.URL, name)
}

// hostOf is host for the server u names and, for https, the TLS server
// name (u's host when empty).
func (ts *Transports) hostOf(u *url.URL, name string) (hc *fasthttp.HostClient, owned bool, err error) {
	var k hostKey
	switch u.Scheme {
	case "http":
		k.addr = withPort(u.Host, "80")
	case "https":
		k.addr = withPort(u.Host, "443")
		k.name = name
		if k.name == "" {
			k.name = u.Hostname()
		}
	default:
		return nil, false, fmt.Errorf("unsupported scheme %q", u.Scheme)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if hc, ok := ts.hosts[k]; ok {
		return hc, false, nil
	}
	hc = ts.newHost(k)
	if k.name != "" && ts.names >= maxTLSNames {
		return hc, true, nil
	}
	if k.name != "" {
		ts.names++
	}
	ts.hosts[k] = hc
	return hc, false, nil
}

// newHost is the pool of one origin server. Its connections are dialled
// (and for https, handshaken) within DialTimeout; the pool's own request
// methods are not used (see exchange), only its connections.
func (ts *Transports) newHost(k hostKey) *fasthttp.HostClient {
	var tlsCfg *tls.Config
	if k.name != "" {
		tlsCfg = &tls.Config{ServerName: k.name, RootCAs: ts.cfg.RootCAs, MinVersion: tls.VersionTLS12,
			NextProtos: []string{"http/1.1"}}
	}
	timeout := ts.cfg.DialTimeout
	return &fasthttp.HostClient{
		Addr: k.addr,
		Dial: func(addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			c, err := ts.dialer.DialContext(ctx, "tcp", addr)
			if err != nil || tlsCfg == nil {
				return c, err
			}
			tc := tls.Client(c, tlsCfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = c.Close()
				return nil, err
			}
			return tc, nil
		},
		MaxConns:            1 << 20, // the pools' max_origin_requests is the limit
		MaxIdleConnDuration: idleTimeout,
		ReadBufferSize:      16 << 10,
		WriteBufferSize:     16 << 10,
	}
}

// withPort adds port to a host without one.
func withPort(host, port string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// RoundTrip sends req (its URL names the origin server) and returns the
// response once its header is in; the body streams from the connection
// and must be closed. A request with no body that fails on a kept-alive
// connection before any answer (the origin closed it meanwhile) is sent
// once more on a new one.
func (ts *Transports) RoundTrip(req *http.Request) (*http.Response, error) {
	hc, owned, err := ts.host(req)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	freq := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(freq)
	if err := buildRequest(freq, req); err != nil {
		closeBody(req)
		return nil, err
	}
	var body io.ReadCloser
	if hasBody(req) {
		body = req.Body
	}
	x, err := ts.send(req.Context(), hc, owned, freq, body, req.ContentLength)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	return x.response(req), nil
}

// send sends freq (and body, of size bytes or -1, if any) on a connection
// of hc and reads the response header. A request with no body that fails
// on a kept-alive connection before any answer (the origin closed it
// meanwhile) is sent once more on a new one.
func (ts *Transports) send(ctx context.Context, hc *fasthttp.HostClient, owned bool, freq *fasthttp.Request, body io.ReadCloser, size int64) (*exchangeState, error) {
	for attempt := 0; ; attempt++ {
		x, reused, err := ts.exchange(ctx, hc, owned, freq, body, size)
		if err == nil {
			return x, nil
		}
		if attempt > 0 || !reused || body != nil || !retryable(err) || ctx.Err() != nil {
			return nil, err
		}
	}
}

// closeBody closes a request body the transport will not send, as
// http.RoundTripper requires.
func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// buildRequest writes req into freq: the request line with the target as
// given (never normalised: the cache key and the origin see one path), the
// Host, the fields as they are, and the body as a stream.
func buildRequest(freq *fasthttp.Request, req *http.Request) error {
	h := &freq.Header
	h.DisableNormalizing()
	h.SetNoDefaultContentType(true)
	h.SetMethod(req.Method)
	uri := req.URL.RequestURI()
	if req.URL.Opaque == "" && !strings.HasPrefix(uri, "/") && req.Method != http.MethodOptions {
		return fmt.Errorf("request target %q is not in origin form", uri)
	}
	h.SetRequestURI(uri)
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	h.SetHost(host)
	for k, vs := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding":
			continue // set from req's own fields
		}
		for _, v := range vs {
			if v == "" && k == "User-Agent" {
				continue // the bypass proxy's way of asking for none
			}
			h.Add(k, v)
		}
	}
	if req.Close {
		h.SetConnectionClose()
	}
	switch {
	case hasBody(req) && req.ContentLength > 0:
		h.SetContentLength(int(req.ContentLength))
	case hasBody(req):
		h.SetContentLength(-1) // chunked
	case req.ContentLength > 0:
		return errors.New("request has a Content-Length but no body")
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		h.SetContentLength(0)
	}
	return nil
}

// hasBody reports whether req has a body to send.
func hasBody(req *http.Request) bool {
	return req.Body != nil && req.Body != http.NoBody
}

// ErrRequestBody is the failure of a request body the client sent (too
// slow, malformed, cut short): the origin is not to blame.
var ErrRequestBody = errors.New("origin: the client's request body failed")

// retryable reports whether err is what a kept-alive connection the origin
// closed meanwhile fails with.
func retryable(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// longAgo is a deadline in the past: set on a connection, it ends the
// reads and writes in progress at once.
var longAgo = time.Unix(1, 0)

// exchange sends freq on a connection of hc and reads the response header.
// ctx's end interrupts it, and later the body's reads. reused reports that
// the connection had served a request before.
func (ts *Transports) exchange(ctx context.Context, hc *fasthttp.HostClient, owned bool, freq *fasthttp.Request, body io.ReadCloser, size int64) (*exchangeState, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, context.Cause(ctx)
	}
	cc, err := hc.AcquireConn(0, owned)
	if err != nil {
		return nil, false, fmt.Errorf("connect %s: %w", hc.Addr, err)
	}
	conn := cc.Conn()
	reused := !cc.LastUseTime().IsZero() // set when a request released it
	// x is the watch's own: a failure below must not clear what it sees.
	x := &exchangeState{hc: hc, conn: conn, ctx: ctx, body: body,
		done: func(reuse bool) {
			if reuse {
				hc.ReleaseConn(cc)
			} else {
				hc.CloseConn(cc)
			}
		},
		keep: !owned && hc.IdleConnsCount() < ts.cfg.MaxIdlePerHost}
	x.stop = alwaysLive
	if ctx.Done() != nil {
		x.stop = context.AfterFunc(ctx, func() {
			x.cancelled.Store(true)
			_ = conn.SetDeadline(longAgo)
		})
	}
	fail := func(err error) (*exchangeState, bool, error) {
		x.stop()
		x.done(false)
		if serr := x.sendDone(); errors.Is(serr, ErrRequestBody) {
			err = serr // the client's body failed first, and stopped the exchange: that is why
		}
		if x.cancelled.Load() {
			return nil, reused, fmt.Errorf("%w (%w)", context.Cause(ctx), err)
		}
		return nil, reused, err
	}
	bw := hc.AcquireWriter(conn)
	_, err = bw.Write(freq.Header.Header())
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		hc.ReleaseWriter(bw)
		return fail(fmt.Errorf("send request: %w", err))
	}
	// The header's deadline is set before a body's sender starts: a
	// sender that fails sets one in the past, which must stay.
	x.setReadDeadline(time.Now().Add(ts.cfg.HeaderTimeout))
	if body != nil {
		// The body goes out as it comes, while the origin may already
		// answer (it need not read all of it first).
		x.sent = make(chan error, 1)
		go func() {
			err := sendBody(bw, body, size)
			hc.ReleaseWriter(bw)
			x.sent <- err
			if err != nil {
				_ = conn.SetDeadline(longAgo) // the origin got a part: nothing more on this connection
			}
		}()
	} else {
		hc.ReleaseWriter(bw)
	}
	x.br = hc.AcquireReader(conn)
	fresp := fasthttp.AcquireResponse()
	fresp.Header.SetNoDefaultContentType(true)
	fresp.StreamBody = true
	fresp.SkipBody = freq.Header.IsHead()
	if err := fresp.ReadLimitBody(x.br, 0); err != nil {
		fasthttp.ReleaseResponse(fresp)
		hc.ReleaseReader(x.br)
		if (errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, fasthttp.ErrTimeout)) && !x.cancelled.Load() {
			err = &headerTimeout{after: ts.cfg.HeaderTimeout, err: err}
		}
		return fail(fmt.Errorf("read response: %w", err))
	}
	x.setReadDeadline(time.Time{})
	x.resp = fresp
	return x, reused, nil
}

// statusLines are the status lines of the codes net/http knows.
var statusLines = func() (lines [600]string) {
	for code := range lines {
		if t := http.StatusText(code); t != "" {
			lines[code] = strconv.Itoa(code) + " " + t
		}
	}
	return lines
}()

func statusLine(code int) string {
	if code >= 0 && code < len(statusLines) && statusLines[code] != "" {
		return statusLines[code]
	}
	return strconv.Itoa(code) + " " + http.StatusText(code)
}

// alwaysLive is the stop of an exchange whose context never ends.
func alwaysLive() bool { return true }

// headerTimeout: the origin sent no response header in time. It is a
// net.Error whose Timeout is true.
type headerTimeout struct {
	after time.Duration
	err   error
}

func (e *headerTimeout) Error() string   { return fmt.Sprintf("no response header within %s", e.after) }
func (e *headerTimeout) Unwrap() error   { return e.err }
func (e *headerTimeout) Timeout() bool   { return true }
func (e *headerTimeout) Temporary() bool { return false }

// exchangeState is one request on one connection, from the response
// header to the end of its body.
type exchangeState struct {
	hc        *fasthttp.HostClient
	conn      net.Conn
	ctx       context.Context
	done      func(reuse bool) // returns the connection to its pool, or closes it
	keep      bool             // the connection may go back to its pool
	br        *bufio.Reader
	resp      *fasthttp.Response
	stop      func() bool // ends the watch on ctx; false once ctx ended
	cancelled atomic.Bool
	sent      chan error // the request body's sender, when there is one
	body      io.Closer  // the request body the sender reads
	// fast and its body are ForwardFast's answer, made with the exchange.
	fast     FastResponse
	fastBody streamBody
}

// setReadDeadline sets the connection's read deadline, unless the context
// ended meanwhile: the deadline in the past its watch set must stay, or a
// cancellation that came between the request's write and this would wait
// out the header timeout.
func (x *exchangeState) setReadDeadline(t time.Time) {
	_ = x.conn.SetReadDeadline(t)
	if x.ctx.Err() != nil {
		_ = x.conn.SetDeadline(longAgo)
	}
}

// sendDone reports whether the request body's sender (if any) ended
// without an error, waiting for it: a sender still reading the body (the
// origin answered before it had all of it) is stopped by closing the body,
// as net/http's transport does, so that nothing reads it after the
// exchange.
func (x *exchangeState) sendDone() error {
	if x.sent == nil {
		return nil
	}
	var err error
	select {
	case err = <-x.sent:
	default:
		_ = x.body.Close()
		_ = x.conn.SetDeadline(longAgo)
		err = <-x.sent
		if err == nil {
			err = errors.New("request body not sent whole")
		}
	}
	x.sent <- err // for a later call
	return err
}

// sendBody writes a request body to the origin as it is read, flushing
// every piece: Content-Length bytes exactly, or chunks when size is
// unknown (-1).
func sendBody(bw *bufio.Writer, body io.ReadCloser, size int64) error {
	defer body.Close()
	buf := copyBuffers.Get()
	defer copyBuffers.Put(buf)
	var sent int64
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if size > 0 && sent+int64(n) > size {
				return fmt.Errorf("request body longer than its Content-Length %d", size)
			}
			var err error
			if size > 0 {
				_, err = bw.Write(buf[:n])
			} else {
				_, err = fmt.Fprintf(bw, "%x\r\n", n)
				if err == nil {
					_, err = bw.Write(buf[:n])
				}
				if err == nil {
					_, err = bw.WriteString("\r\n")
				}
			}
			if err == nil {
				err = bw.Flush()
			}
			if err != nil {
				return fmt.Errorf("send request body: %w", err)
			}
			sent += int64(n)
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("%w: %w", ErrRequestBody, rerr)
		}
	}
	if size > 0 && sent != size {
		return fmt.Errorf("%w: it ended after %d of its %d bytes: %w", ErrRequestBody, sent, size, io.ErrUnexpectedEOF)
	}
	if size <= 0 {
		if _, err := bw.WriteString("0\r\n\r\n"); err != nil {
			return fmt.Errorf("send request body: %w", err)
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("send request body: %w", err)
		}
	}
	return nil
}

// response turns the fasthttp response into an http.Response whose body
// reads the connection.
func (x *exchangeState) response(req *http.Request) *http.Response {
	fr := x.resp
	code := fr.StatusCode()
	hr := &http.Response{
		Status:     statusLine(code),
		StatusCode: code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		ContentLength: -1,
		Request:       req,
		Close:         fr.ConnectionClose() && code != http.StatusSwitchingProtocols,
	}
	fieldsOf(&fr.Header, hr)
	if cl := fr.Header.ContentLength(); cl >= 0 {
		hr.ContentLength = int64(cl)
	}
	switch {
	case code == http.StatusSwitchingProtocols:
		// The connection is the body now, both ways (a WebSocket); it
		// never goes back to the pool.
		hr.ContentLength = 0
		x.stop()
		hr.Body = &upgraded{r: io.MultiReader(x.br, x.conn), conn: x.conn, done: func() {
			fasthttp.ReleaseResponse(fr)
			x.hc.ReleaseReader(x.br)
			x.done(false)
		}}
	case fr.BodyStream() == nil:
		if req.Method != http.MethodHead {
			hr.ContentLength = 0
		}
		hr.Body = http.NoBody
		x.release(true)
	default:
		if len(fr.Header.PeekTrailerKeys()) > 0 {
			hr.Trailer = http.Header{}
		}
		hr.Body = &streamBody{x: x, trailer: hr.Trailer}
	}
	return hr
}

// fieldsOf sets hr's header from fr's, under the canonical names net/http
// uses (an origin may send "ETag" or "content-type"), in three
// allocations whatever the number of fields: the map, the values' slices
// and their bytes. Connection: close and Transfer-Encoding are framing, in
// hr's own fields.
func fieldsOf(fr *fasthttp.ResponseHeader, hr *http.Response) {
	n, size := 0, 0
	for k, v := range fr.All() {
		if string(k) != "Connection" || !framingOnly(string(v)) {
			n++ // a map of up to 8 fields needs no table of its own
		}
		size += len(v)
	}
	hr.Header = make(http.Header, n)
	vals := make([]string, 0, n)
	var arena strings.Builder
	arena.Grow(size)
	for _, v := range fr.All() {
		arena.Write(v)
	}
	all, off := arena.String(), 0
	for k, v := range fr.All() {
		val := all[off : off+len(v)]
		off += len(v)
		name := httpcache.FieldName(k)
		switch {
		case name == "Transfer-Encoding":
			hr.TransferEncoding = []string{"chunked"}
			continue
		case name == "Connection" && framingOnly(val):
			continue // keep-alive or close: nothing for the header to carry
		}
		if prev, ok := hr.Header[name]; ok {
			hr.Header[name] = append(prev, val) // its own array from now on
			continue
		}
		vals = append(vals, val)
		hr.Header[name] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
}

// framingOnly reports whether a Connection field value names only the
// connection's persistence (keep-alive, close), not fields to drop.
func framingOnly(v string) bool {
	return len(httpcache.ConnectionOptions([]string{v})) == 0
}

// release returns the connection to its pool when the response was read
// whole and the connection may carry another, else closes it.
func (x *exchangeState) release(whole bool) {
	live := x.stop() // false once ctx ended: the connection's deadline is spoilt
	if !whole {
		_ = x.conn.SetDeadline(longAgo) // a sender still writing stops
	}
	serr := x.sendDone()
	reuse := whole && live && serr == nil && x.keep && !x.resp.ConnectionClose()
	if x.resp.BodyStream() != nil {
		_ = x.resp.CloseBodyStream()
	}
	fasthttp.ReleaseResponse(x.resp)
	x.hc.ReleaseReader(x.br)
	x.done(reuse)
}

// streamBody is a response body read from the connection as it arrives.
// Close may come while a Read is in progress (from another goroutine): it
// ends that read first.
type streamBody struct {
	x       *exchangeState
	trailer http.Header
	mu      sync.Mutex // held by Read
	eof     bool
	eofSeen atomic.Bool // eof, for Close to read without the lock
	closed  atomic.Bool
}

func (b *streamBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return 0, errors.New("origin: read on a closed body")
	}
	if b.eof {
		return 0, io.EOF
	}
	n, err := b.x.resp.BodyStream().Read(p)
	switch {
	case errors.Is(err, io.EOF):
		b.eof = true
		b.eofSeen.Store(true)
		b.x.resp.Header.VisitAllTrailer(func(k []byte) {
			if b.trailer != nil {
				b.trailer[string(k)] = []string{string(b.x.resp.Header.PeekBytes(k))}
			}
		})
		return n, io.EOF
	case err != nil && b.x.cancelled.Load():
		return n, fmt.Errorf("%w (%w)", context.Cause(b.x.ctx), err)
	case err != nil:
		return n, fmt.Errorf("origin: read body: %w", err)
	}
	return n, nil
}

func (b *streamBody) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	if !b.eofSeen.Load() {
		_ = b.x.conn.SetReadDeadline(longAgo) // a Read in progress ends now
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.x.release(b.eof)
	return nil
}

// upgraded is the body of a 101 response: the connection itself, which
// the bypass proxy reads and writes.
type upgraded struct {
	r    io.Reader
	conn net.Conn
	once sync.Once
	done func()
}

func (u *upgraded) Read(p []byte) (int, error)  { return u.r.Read(p) }
func (u *upgraded) Write(p []byte) (int, error) { return u.conn.Write(p) }
func (u *upgraded) Close() error {
	u.once.Do(u.done)
	return nil
}
