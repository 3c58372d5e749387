// Package reqguard bounds a client's request body in time: a body that
// trickles in (a slow-loris upload) is cut, and its failure is told from
// the origin's, whatever front received the request.
package reqguard

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// MinRate is the body rate Body expects once its first allowance is spent:
// the deadline grows by a second for every MinRate bytes read (as Apache's
// mod_reqtimeout does by default), so a large upload on a slow link goes
// through and a trickle does not.
const MinRate = 500

// Errors of a request body, as Body's Err tells them.
var (
	// ErrBodyTimeout: the client sent its body slower than allowed.
	ErrBodyTimeout = errors.New("request body too slow")
	// ErrBadBody: the body's framing is broken (a malformed chunk).
	ErrBadBody = errors.New("malformed request body")
	// ErrShortBody: the client's body ended before its length (it left).
	ErrShortBody = errors.New("request body ended early")
)

// Body is a request body read within a deadline: timeout from the first
// read, plus a second per MinRate bytes. Its read errors wrap
// ErrBodyTimeout or ErrBadBody when the client's side failed, so a proxy's
// error handler can tell them from the origin's; Err keeps the first, for
// an origin that answers a body it did not get whole.
type Body struct {
	r        io.ReadCloser
	rc       *http.ResponseController
	deadline time.Time

	mu  sync.Mutex
	err error
}

// GuardBody returns r with its body bounded by timeout, and the body's
// failure reachable from its context (BodyError); a request without a body
// is returned as it is. The deadline is the connection's read deadline,
// set through w.
func GuardBody(w http.ResponseWriter, r *http.Request, timeout time.Duration) *http.Request {
	if r.Body == nil || r.Body == http.NoBody || timeout <= 0 {
		return r
	}
	b := &Body{r: r.Body, rc: http.NewResponseController(w), deadline: time.Now().Add(timeout)}
	_ = b.rc.SetReadDeadline(b.deadline) // not every writer supports it; the reads check the time too
	r = r.WithContext(context.WithValue(r.Context(), bodyKey{}, b))
	r.Body = b
	return r
}

type bodyKey struct{}

// BodyError is the client-side failure of the guarded body of the request
// whose context (or a context derived from it) ctx is: an origin may have
// answered a body it did not get whole, and that answer is not the
// client's.
func BodyError(ctx context.Context) error {
	if b, ok := ctx.Value(bodyKey{}).(*Body); ok {
		return b.Err()
	}
	return nil
}

// Read reads the body and moves the deadline on by what arrived.
func (b *Body) Read(p []byte) (int, error) {
	if time.Now().After(b.deadline) {
		return 0, b.fail(ErrBodyTimeout)
	}
	n, err := b.r.Read(p)
	if n > 0 {
		b.deadline = b.deadline.Add(time.Duration(n) * time.Second / MinRate)
		_ = b.rc.SetReadDeadline(b.deadline)
	}
	switch {
	case err == nil || errors.Is(err, io.EOF):
		if errors.Is(err, io.EOF) {
			_ = b.rc.SetReadDeadline(time.Time{})
		}
		return n, err
	case errors.Is(err, os.ErrDeadlineExceeded):
		return n, b.fail(ErrBodyTimeout)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return n, b.fail(errors.Join(ErrShortBody, err))
	case errors.Is(err, http.ErrBodyReadAfterClose):
		return n, err
	default:
		return n, b.fail(errors.Join(ErrBadBody, err))
	}
}

func (b *Body) fail(err error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil {
		b.err = err
	}
	return err
}

// Err is the first client-side failure reading the body (wrapping
// ErrBodyTimeout, ErrBadBody or ErrShortBody), or nil.
func (b *Body) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Close closes the body.
func (b *Body) Close() error { return b.r.Close() }
