package cache

import (
	"context"
	"errors"
	"io"
	"sync"
)

// ErrFillAborted is returned to readers of a fill whose origin response broke
// off (a short body, a reset connection, a timeout). Readers must not present
// what they received as complete.
var ErrFillAborted = errors.New("cache: fill aborted")

// Fill is a response being received from upstream. One writer appends the body;
// any number of readers stream it from any offset while it grows
// (read-while-write). The writer ends it with Finish.
type Fill struct {
	mu      sync.Mutex
	head    *Entry
	buf     []byte
	done    bool
	err     error
	changed chan struct{} // closed and replaced on every change
}

// NewFill returns an empty fill.
func NewFill() *Fill {
	return &Fill{changed: make(chan struct{})}
}

// notifyLocked wakes every waiting reader. f.mu must be held.
func (f *Fill) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// SetHead publishes the response's metadata (status, header, size). head must
// not be changed afterwards. sizeHint preallocates the body buffer.
func (f *Fill) SetHead(head *Entry, sizeHint int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.head = head
	if sizeHint > 0 {
		f.buf = make([]byte, 0, sizeHint)
	}
	f.notifyLocked()
}

// Write appends body bytes. It never fails.
func (f *Fill) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Readers hold slices of f.buf[:n] for earlier n; append only writes past
	// them, or copies to a new array, so those slices stay valid and unchanged.
	f.buf = append(f.buf, p...)
	f.notifyLocked()
	return len(p), nil
}

// Finish ends the fill. A nil err means the body is complete; otherwise readers
// get an error wrapping ErrFillAborted and err.
func (f *Fill) Finish(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return
	}
	f.done = true
	if err != nil {
		f.err = errors.Join(ErrFillAborted, err)
	}
	f.notifyLocked()
}

// Head waits for the response's metadata. If the fill ends before it has any, the
// fill's error is returned.
func (f *Fill) Head(ctx context.Context) (*Entry, error) {
	for {
		f.mu.Lock()
		head, done, err, ch := f.head, f.done, f.err, f.changed
		f.mu.Unlock()
		switch {
		case head != nil:
			return head, nil
		case done && err != nil:
			return nil, err
		case done:
			return nil, ErrFillAborted
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// Next returns body bytes from offset off on, waiting until there are some. It
// returns io.EOF once the fill is complete and off is at its end, and the fill's
// error if it was aborted. The returned slice must not be modified.
func (f *Fill) Next(ctx context.Context, off int64) ([]byte, error) {
	for {
		f.mu.Lock()
		buf, done, err, ch := f.buf, f.done, f.err, f.changed
		f.mu.Unlock()
		switch {
		case err != nil:
			return nil, err
		case off < int64(len(buf)):
			return buf[off:], nil
		case done:
			return nil, io.EOF
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// Wait blocks until the fill ends and returns its complete body, or its error.
func (f *Fill) Wait(ctx context.Context) ([]byte, error) {
	for {
		f.mu.Lock()
		buf, done, err, ch := f.buf, f.done, f.err, f.changed
		f.mu.Unlock()
		if done {
			return buf, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// Buffered returns how many body bytes have arrived so far.
func (f *Fill) Buffered() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return int64(len(f.buf))
}
