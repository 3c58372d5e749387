package cache

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
)

// Body is a representation to send: complete (stored) or still arriving
// (a fill).
type Body interface {
	// Size is the length, -1 while unknown.
	Size() int64
	// Copy writes [off, off+n) to w; n < 0 means to the end. A body still
	// arriving flushes client (through http.ResponseController) whenever it
	// has caught up with the fill, so the first bytes leave before the last
	// arrive.
	Copy(ctx context.Context, w io.Writer, client http.ResponseWriter, off, n int64) (int64, error)
	// Complete waits for the whole body.
	Complete(ctx context.Context) ([]byte, error)
	// Err is the error of the fill the body streams, if it failed.
	Err() error
}

// FillBody returns the body of a fill whose head has size, still arriving:
// in memory or, for a file-backed fill, in its file.
func FillBody(f *Fill, size int64) Body {
	if f.FileBacked() {
		return fileFillBody{f, size}
	}
	return fillBody{f, size}
}

// FileBody returns a complete body of size bytes in the file at path.
func FileBody(path string, size int64) Body { return fileBody{path: path, n: size} }

// Bytes is a complete body in memory.
type Bytes []byte

func (b Bytes) Size() int64 { return int64(len(b)) }

func (b Bytes) Copy(_ context.Context, w io.Writer, _ http.ResponseWriter, off, n int64) (int64, error) {
	end := int64(len(b))
	if n >= 0 {
		end = off + n
	}
	if sw, ok := w.(SharedWriter); ok {
		m, err := sw.WriteShared(b[off:end])
		return int64(m), err
	}
	m, err := w.Write(b[off:end])
	return int64(m), err
}

// SharedWriter is a writer that may keep the bytes it is given instead of
// copying them, for as long as it likes: a stored body is never modified.
// A front that sends a response after its handler returns (fasthttp's)
// sends a body from memory without a copy this way.
type SharedWriter interface {
	WriteShared(p []byte) (int, error)
}

func (b Bytes) Complete(context.Context) ([]byte, error) { return b, nil }

type fillBody struct {
	f *Fill
	n int64
}

func (b fillBody) Size() int64 { return b.n }

// copy streams from the fill as it grows, flushing to the client whenever it has
// caught up with the origin, so the first bytes leave before the last arrive.
func (b fillBody) Copy(ctx context.Context, w io.Writer, client http.ResponseWriter, off, n int64) (int64, error) {
	var written int64
	rc := http.NewResponseController(client)
	for n < 0 || written < n {
		// Flush when caught up with the origin, except after the last byte: the
		// response completes only once the fill has ended (and is stored), so a
		// client that asks again right after finds the stored entry.
		if b.f.Buffered() <= off && (b.n < 0 || off < b.n) {
			_ = rc.Flush()
		}
		p, err := b.f.Next(ctx, off)
		if err != nil {
			return written, readEnd(err, n)
		}
		if n >= 0 {
			p = p[:min(int64(len(p)), n-written)]
		}
		m, err := w.Write(p)
		written += int64(m)
		off += int64(m)
		b.f.Consumed(off)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

func (b fillBody) Complete(ctx context.Context) ([]byte, error) { return b.f.Wait(ctx) }

// fileBody is a complete body in a file of the disk tier. Copies to the client
// connection go through sendfile.
type fileBody struct {
	path string
	n    int64
}

func (b fileBody) Size() int64 { return b.n }

func (b fileBody) Copy(_ context.Context, w io.Writer, _ http.ResponseWriter, off, n int64) (int64, error) {
	f, err := os.Open(b.path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if n < 0 {
		n = b.n - off
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	m, err := io.Copy(w, io.LimitReader(f, n))
	if err == nil && m < n {
		err = io.ErrUnexpectedEOF
	}
	return m, err
}

func (b fileBody) Complete(context.Context) ([]byte, error) {
	return nil, errors.New("a disk object always has a known size")
}

// fileFillBody is a fill whose body is being written to a file of the disk
// tier: readers follow the writer through the file with a small buffer, so a
// large object streams to any number of clients in bounded memory.
type fileFillBody struct {
	f *Fill
	n int64
}

func (b fileFillBody) Size() int64 { return b.n }

func (b fileFillBody) Copy(ctx context.Context, w io.Writer, client http.ResponseWriter, off, n int64) (int64, error) {
	var file io.ReaderAt = b.f.mem
	if b.f.mem == nil {
		f, err := b.f.OpenBody()
		if err != nil {
			return 0, err
		}
		defer f.Close()
		file = f
	}
	rc := http.NewResponseController(client)
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var written int64
	for n < 0 || written < n {
		avail, err := b.f.WaitAvail(ctx, off)
		if err != nil {
			return written, readEnd(err, n)
		}
		chunk := avail - off
		if n >= 0 {
			chunk = min(chunk, n-written)
		}
		k, err := b.piece(w, file, buf, off, chunk)
		written += k
		off += k
		if err != nil {
			return written, err
		}
		if off >= avail && (b.n < 0 || off < b.n) {
			_ = rc.Flush() // caught up with the origin: let the client have it
		}
	}
	return written, nil
}

// piece writes the next piece of the n bytes at off to w: a region of a
// memory file as it is to a RegionWriter (with sendfile, for a socket in
// clear text), or up to a buffer's worth read from the file.
func (b fileFillBody) piece(w io.Writer, file io.ReaderAt, buf []byte, off, n int64) (int64, error) {
	if rw, ok := w.(RegionWriter); ok && b.f.mem != nil {
		return rw.WriteRegion(&Region{o: b.f.mem, off: off, n: n})
	}
	m, err := file.ReadAt(buf[:min(n, int64(len(buf)))], off)
	if m > 0 {
		k, werr := w.Write(buf[:m])
		if werr != nil {
			return int64(k), werr
		}
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return int64(m), err
}

// Complete waits for a fill in a memory file and returns a copy of its
// body; a fill on disk is never asked (its object is too large for memory).
func (b fileFillBody) Complete(ctx context.Context) ([]byte, error) {
	if b.f.mem == nil {
		return nil, errors.New("cache: a disk fill's body is never taken whole")
	}
	if err := b.f.Done(ctx); err != nil {
		return nil, err
	}
	avail, _ := b.f.WaitAvail(ctx, 0)
	p := make([]byte, avail)
	_, err := b.f.mem.ReadAt(p, 0)
	return p, err
}

func (Bytes) Err() error          { return nil }
func (b fillBody) Err() error     { return b.f.Err() }
func (fileBody) Err() error       { return nil }
func (b fileFillBody) Err() error { return b.f.Err() }

// readEnd is the outcome of a copy from a fill that ended with err: the
// fill's end (io.EOF) completes a copy to the end, and cuts short one of n
// bytes.
func readEnd(err error, n int64) error {
	switch {
	case !errors.Is(err, io.EOF):
		return err
	case n >= 0:
		return io.ErrUnexpectedEOF
	}
	return nil
}
