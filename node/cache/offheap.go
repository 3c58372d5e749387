package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
)

// OffHeapMin is the body length from which the memory tier keeps a body
// off the Go heap, in a sealed memory file of its own: a client
// connection in clear text gets it with sendfile, which hands the kernel's
// pages to the socket instead of copying the bytes in (as a disk
// object's file is sent, and as nginx sends its cache). Shorter bodies
// stay on the heap, where one write of the whole response is cheaper.
const OffHeapMin = 64 << 10

// offHeap is a body in a sealed memory file (memfd): nothing can change
// its bytes, so every reader may use the file at once, each at its own
// offset, and the kernel may keep its pages in a socket's queue for as
// long as it needs. The file is closed when the offHeap is unreachable:
// a reader holds it for as long as it sends from it.
type offHeap struct {
	fd      int
	n       int64 // the length, once sealed
	written int64 // the writer's: how much append wrote
	sealed  bool
}

// offHeapFiles counts the memory files that are open; offHeapLimit is how
// many may be, half the process's file limit, so that bodies never take
// the descriptors connections need. A body beyond it stays on the heap.
var (
	offHeapFiles atomic.Int64
	offHeapLimit = sync.OnceValue(func() int64 {
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0
		}
		return int64(min(rl.Cur/2, 1<<40))
	})
)

// errNoOffHeap: the body stays on the heap (no descriptor to spare, or
// no memory files here).
var errNoOffHeap = errors.New("cache: no room off the heap")

// newOffHeap copies p into a new sealed memory file.
func newOffHeap(p []byte) (*offHeap, error) {
	o, err := growingOffHeap()
	if err != nil {
		return nil, err
	}
	if err := o.append(p); err != nil {
		return nil, err
	}
	if err := o.seal(); err != nil {
		return nil, err
	}
	return o, nil
}

// growingOffHeap returns an empty memory file that append fills and seal
// completes (a fill's body, which readers follow as it grows).
func growingOffHeap() (*offHeap, error) {
	if offHeapFiles.Add(1) > offHeapLimit() {
		offHeapFiles.Add(-1)
		return nil, errNoOffHeap
	}
	fd, err := memfile()
	if err != nil {
		offHeapFiles.Add(-1)
		return nil, fmt.Errorf("cache: a body off the heap: %w", err)
	}
	o := &offHeap{fd: fd}
	runtime.AddCleanup(o, closeOffHeap, fd)
	return o, nil
}

// append adds p at the end. Only the one writer calls it, before seal;
// readers read what it wrote (readAt) meanwhile.
func (o *offHeap) append(p []byte) error {
	err := pwrite(o.fd, p, o.written)
	runtime.KeepAlive(o)
	if err != nil {
		return fmt.Errorf("cache: writing a body off the heap: %w", err)
	}
	o.written += int64(len(p))
	return nil
}

// seal ends the writing: the file's bytes can no longer change, and n is
// its length. The writer calls it before any reader of the stored body
// has the offHeap; a sealed file stays as it is.
func (o *offHeap) seal() error {
	if o.sealed {
		return nil
	}
	err := seal(o.fd)
	runtime.KeepAlive(o)
	if err != nil {
		return fmt.Errorf("cache: sealing a body off the heap: %w", err)
	}
	o.n, o.sealed = o.written, true
	return nil
}

func closeOffHeap(fd int) {
	_ = syscall.Close(fd)
	offHeapFiles.Add(-1)
}

// OffHeapFiles is how many bodies are off the heap now, counting those
// evicted that the garbage collector has not yet let go of.
func OffHeapFiles() int64 { return offHeapFiles.Load() }

// ReadAt is io.ReaderAt's: it reads len(p) bytes at off.
func (o *offHeap) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := syscall.Pread(o.fd, p[n:], off+int64(n))
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			runtime.KeepAlive(o)
			return n, err
		}
		if m == 0 {
			runtime.KeepAlive(o)
			return n, io.ErrUnexpectedEOF
		}
		n += m
	}
	runtime.KeepAlive(o)
	return n, nil
}

// Region is a part of a body kept off the heap, as a reader: a front
// whose connection is a socket in clear text sends it with SendTo, any
// other reads or copies it.
type Region struct {
	o      *offHeap
	off, n int64 // what is left: n bytes from off
}

// Len is how many bytes are left.
func (r *Region) Len() int64 { return r.n }

func (r *Region) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n)]
	m, err := r.o.ReadAt(p, r.off)
	r.off, r.n = r.off+int64(m), r.n-int64(m)
	return m, err
}

// copyBufs are WriteTo's buffers.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// WriteTo copies what is left to w through a buffer.
func (r *Region) WriteTo(w io.Writer) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	var total int64
	for r.n > 0 {
		m, err := r.Read(*bp)
		if m > 0 {
			k, werr := w.Write((*bp)[:m])
			total += int64(k)
			if werr != nil {
				return total, werr
			}
		}
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// SendTo sends what is left to the socket of c with sendfile: the socket's
// queue takes the memory file's pages, no copy of the bytes is made. It
// waits for room in the socket as c's deadlines allow.
func (r *Region) SendTo(c syscall.RawConn) (int64, error) {
	var total int64
	var serr error
	err := c.Write(func(fd uintptr) bool {
		for r.n > 0 {
			off := r.off
			m, err := syscall.Sendfile(int(fd), r.o.fd, &off, int(min(r.n, 1<<30)))
			if m > 0 {
				r.off, r.n, total = r.off+int64(m), r.n-int64(m), total+int64(m)
			}
			switch {
			case errors.Is(err, syscall.EAGAIN):
				return false // wait until the socket has room
			case errors.Is(err, syscall.EINTR):
			case err != nil:
				serr = fmt.Errorf("sendfile: %w", err)
				return true
			case m == 0:
				serr = io.ErrUnexpectedEOF
				return true
			}
		}
		return true
	})
	runtime.KeepAlive(r.o)
	if err == nil {
		err = serr
	}
	return total, err
}

// RegionWriter is a writer that takes a body off the heap as a Region, to
// send it as its connection allows (a socket in clear text: with sendfile).
// The offHeap body's Copy hands it its part; the writer owns the Region.
type RegionWriter interface {
	WriteRegion(r *Region) (int64, error)
}

// offHeapBody is a stored entry's body off the heap as a Body, in a value
// of one pointer.
type offHeapBody struct{ e *Entry }

func (b offHeapBody) Size() int64 { return b.e.off.n }

func (b offHeapBody) Copy(_ context.Context, w io.Writer, _ http.ResponseWriter, off, n int64) (int64, error) {
	if n < 0 {
		n = b.e.off.n - off
	}
	r := &Region{o: b.e.off, off: off, n: n}
	if rw, ok := w.(RegionWriter); ok {
		return rw.WriteRegion(r)
	}
	return r.WriteTo(w)
}

// Complete returns a copy of the body on the heap: the caller may keep it.
func (b offHeapBody) Complete(context.Context) ([]byte, error) {
	p := make([]byte, b.e.off.n)
	_, err := b.e.off.ReadAt(p, 0)
	return p, err
}

func (b offHeapBody) Err() error { return nil }
