package cache

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
)

// ErrFillAborted is returned to readers of a fill whose origin response broke
// off (a short body, a reset connection, a timeout). Readers must not present
// what they received as complete.
var ErrFillAborted = errors.New("cache: fill aborted")

// Fill is a response being received from upstream. One writer appends the body;
// any number of readers stream it from any offset while it grows
// (read-while-write). The writer ends it with Finish.
//
// A fill is either kept (the whole body stays buffered for any number of
// readers, and becomes a stored Entry) or streamed (one reader; the buffer holds
// at most StreamWindow unread bytes and the writer waits for the reader), for
// responses that will not be stored.
type Fill struct {
	mu        sync.Mutex
	head      *Entry
	buf       []byte
	base      int64 // body offset of buf[0]; moves only when streaming
	stream    bool
	abandoned bool
	done      bool
	err       error
	changed   chan struct{} // closed and replaced on every change

	// A file-backed fill writes its body to a disk Writer instead of buf;
	// readers open the file at path and read up to avail.
	w     *Writer
	file  bool
	path  string
	avail int64
	// A kept fill of a known length of OffHeapMin bytes or more writes its
	// body to a memory file instead of buf (see SetHead); readers read it
	// up to avail, and Keep gives it to the stored entry as it is.
	mem *offHeap
}

// StreamWindow is how far a streamed fill's writer may run ahead of its reader.
const StreamWindow = 1 << 20

// ErrAbandoned is returned to the writer of a streamed fill whose reader left.
var ErrAbandoned = errors.New("cache: fill abandoned by its reader")

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
// not be changed afterwards. sizeHint is the body's length when known: a
// kept fill preallocates its buffer, or, from OffHeapMin bytes on, writes
// the body to a memory file, which becomes the stored body without a copy
// on the heap. stream selects streaming with a single reader.
func (f *Fill) SetHead(head *Entry, sizeHint int, stream bool) {
	var mem *offHeap
	if sizeHint >= OffHeapMin && !stream {
		mem, _ = growingOffHeap() // nil: on the heap after all
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.head = head
	f.stream = stream
	switch {
	case mem != nil:
		f.mem, f.file = mem, true
	case sizeHint > 0 && !stream:
		f.buf = make([]byte, 0, sizeHint)
	}
	f.notifyLocked()
}

// SetHeadEntry publishes a stored entry as the fill's head and whole body,
// as the entry keeps it: its bytes, or its memory file, without a copy.
// The caller then calls Finish.
func (f *Fill) SetHeadEntry(e *Entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.head = e
	if e.off != nil {
		f.mem, f.file, f.avail = e.off, true, e.off.n
	} else {
		f.buf = e.Body
	}
	f.notifyLocked()
}

// SetHeadFile publishes head for a fill whose body goes to disk through w: for
// objects too large for memory. Readers use OpenBody and WaitAvail.
func (f *Fill) SetHeadFile(head *Entry, w *Writer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.head, f.w, f.path, f.file = head, w, w.File().Name(), true
	f.notifyLocked()
}

// SetHeadStoredFile publishes head for a fill whose body is already complete
// in the file at path (size bytes): a revalidated object of the disk tier.
// The caller then calls Finish.
func (f *Fill) SetHeadStoredFile(head *Entry, path string, size int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.head, f.path, f.avail, f.file = head, path, size, true
	f.notifyLocked()
}

// Append adds body bytes. Streaming, it first waits while StreamWindow bytes are
// unread; it fails if ctx ends or the reader abandoned the fill.
func (f *Fill) Append(ctx context.Context, p []byte) error {
	for {
		f.mu.Lock()
		if f.abandoned {
			f.mu.Unlock()
			return ErrAbandoned
		}
		if f.w != nil || f.mem != nil {
			f.mu.Unlock()
			return f.appendFile(p)
		}
		if !f.stream || len(f.buf) < StreamWindow {
			// Readers hold slices of f.buf[:n] for earlier n; append only writes
			// past them, or copies to a new array, so those stay unchanged.
			f.buf = append(f.buf, p...)
			f.notifyLocked()
			f.mu.Unlock()
			return nil
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// appendFile writes p to the fill's file (disk or memory) and makes it
// visible to readers.
func (f *Fill) appendFile(p []byte) error {
	if f.mem != nil {
		if err := f.mem.append(p); err != nil {
			return err
		}
	} else {
		if _, err := f.w.Write(p); err != nil {
			return err
		}
		if err := f.w.Flush(); err != nil {
			return err
		}
	}
	f.mu.Lock()
	f.avail += int64(len(p))
	f.notifyLocked()
	f.mu.Unlock()
	return nil
}

// Keep gives e the complete body of a kept fill, as its Body, or as the
// fill's memory file, sealed.
func (f *Fill) Keep(e *Entry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mem == nil {
		e.Body, e.Size = f.buf, int64(len(f.buf))
		return nil
	}
	if err := f.mem.seal(); err != nil {
		return err
	}
	e.Body, e.off, e.Size = nil, f.mem, f.mem.n
	return nil
}

// CommitFile completes a file-backed fill as e: the file is renamed
// into the disk tier. Readers that have the file open keep reading it.
func (f *Fill) CommitFile(e *Entry) (*DiskEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	de, err := f.w.Commit(e)
	if err == nil {
		f.path = de.Path()
	}
	return de, err
}

// AbortFile discards a file-backed fill's file.
func (f *Fill) AbortFile() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.w != nil {
		f.w.Abort()
	}
}

// OpenBody opens a file-backed fill's body for reading.
func (f *Fill) OpenBody() (*os.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return os.Open(f.path)
}

// WaitAvail waits until a file-backed fill has more than off bytes and returns
// how many it has; io.EOF once it is complete and off is at its end, or the
// fill's error.
func (f *Fill) WaitAvail(ctx context.Context, off int64) (int64, error) {
	for {
		f.mu.Lock()
		avail, done, err, ch := f.avail, f.done, f.err, f.changed
		f.mu.Unlock()
		switch {
		case err != nil:
			return 0, err
		case off < avail:
			return avail, nil
		case done:
			return avail, io.EOF
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}
}

// FileBacked reports whether the fill's body is read from a file.
func (f *Fill) FileBacked() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.file
}

// Consumed tells a streamed fill that its reader has written everything before
// off, so the buffer may drop it. Kept fills ignore it.
func (f *Fill) Consumed(off int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stream || off <= f.base {
		return
	}
	f.buf = f.buf[min(off-f.base, int64(len(f.buf))):]
	f.base = off
	f.notifyLocked()
}

// Abandon tells a streamed fill that its reader left: the writer stops.
func (f *Fill) Abandon() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stream && !f.done {
		f.abandoned = true
		f.notifyLocked()
	}
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
// error if it was aborted. The returned slice must not be modified. A streamed
// fill's reader that asks past the buffer skips the bytes before off.
func (f *Fill) Next(ctx context.Context, off int64) ([]byte, error) {
	for {
		f.mu.Lock()
		if f.stream && off > f.base+int64(len(f.buf)) {
			// A streamed fill's one reader starts past what is buffered (a
			// Range in the middle): what comes before is dropped, or the
			// writer would wait for it to be read, and the reader for it.
			f.base += int64(len(f.buf))
			f.buf = f.buf[len(f.buf):]
			f.notifyLocked()
		}
		buf, base, done, err, ch := f.buf, f.base, f.done, f.err, f.changed
		f.mu.Unlock()
		switch {
		case err != nil:
			return nil, err
		case off < base:
			return nil, errors.New("cache: streamed fill read behind its window")
		case off < base+int64(len(buf)):
			return buf[off-base:], nil
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

// ErrStreamed is returned by Wait on a streamed fill: it never holds the whole
// body.
var ErrStreamed = errors.New("cache: a streamed fill keeps no whole body")

// Wait blocks until a kept fill ends and returns its complete body, or its
// error; a streamed fill gives ErrStreamed at once.
func (f *Fill) Wait(ctx context.Context) ([]byte, error) {
	for {
		f.mu.Lock()
		buf, done, err, ch, stream := f.buf, f.done, f.err, f.changed, f.stream
		f.mu.Unlock()
		if stream {
			return nil, ErrStreamed
		}
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

// Done blocks until the fill ends, kept or streamed, and returns its error.
func (f *Fill) Done(ctx context.Context) error {
	for {
		f.mu.Lock()
		done, err, ch := f.done, f.err, f.changed
		f.mu.Unlock()
		if done {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// Err returns the fill's error once it has been aborted, else nil.
func (f *Fill) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// Bytes returns the body received so far in memory (none for a body
// written to a file).
func (f *Fill) Bytes() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.buf
}

// Buffered returns how many body bytes have arrived so far.
func (f *Fill) Buffered() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.base + int64(len(f.buf))
}
