package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func pattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + i/251)
	}
	return p
}

// regionSink is a RegionWriter that reads what it is given.
type regionSink struct{ got bytes.Buffer }

func (s *regionSink) Write(p []byte) (int, error) { return s.got.Write(p) }
func (s *regionSink) WriteRegion(r *Region) (int64, error) {
	return io.Copy(&s.got, struct{ io.Reader }{r})
}

// TestOffHeap: the memory tier keeps a body of OffHeapMin bytes or more
// in a sealed memory file, and every way of reading it gives its bytes:
// whole or in parts, through a plain writer, a RegionWriter, Complete and
// a fill; a shorter body stays on the heap.
func TestOffHeap(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("memory files are Linux's")
	}
	body := pattern(OffHeapMin + 12345)
	m := NewMemory(1 << 30)
	e := &Entry{Status: 200, Header: http.Header{}, Body: bytes.Clone(body), Size: int64(len(body))}
	m.Put("big", e)
	if e.off == nil || e.Body != nil || !e.HasBody() {
		t.Fatalf("a %d-byte body was not moved off the heap (off %v, %d bytes on the heap)", len(body), e.off != nil, len(e.Body))
	}
	small := &Entry{Status: 200, Header: http.Header{}, Body: pattern(OffHeapMin - 1)}
	m.Put("small", small)
	if small.off != nil || small.Body == nil {
		t.Error("a body shorter than OffHeapMin left the heap")
	}
	if _, err := syscall.Write(e.off.fd, []byte("x")); !errors.Is(err, syscall.EPERM) {
		t.Errorf("writing to the sealed memory file: %v, want EPERM", err)
	}

	src := e.Source()
	if !InMemory(src) || src.Size() != int64(len(body)) {
		t.Fatalf("Source: in memory %v, size %d", InMemory(src), src.Size())
	}
	ctx := context.Background()
	for _, part := range [][2]int64{{0, -1}, {0, 1}, {100, 70000}, {int64(len(body)) - 1, 1}, {5, int64(len(body)) - 5}} {
		want := body[part[0]:]
		if part[1] >= 0 {
			want = want[:part[1]]
		}
		var plain bytes.Buffer
		if n, err := src.Copy(ctx, &plain, nil, part[0], part[1]); err != nil || n != int64(len(want)) || !bytes.Equal(plain.Bytes(), want) {
			t.Errorf("Copy %v to a writer: %d bytes, %v; equal %v", part, n, err, bytes.Equal(plain.Bytes(), want))
		}
		var rs regionSink
		if n, err := src.Copy(ctx, &rs, nil, part[0], part[1]); err != nil || n != int64(len(want)) || !bytes.Equal(rs.got.Bytes(), want) {
			t.Errorf("Copy %v to a RegionWriter: %d bytes, %v", part, n, err)
		}
	}
	whole, err := src.Complete(ctx)
	if err != nil || !bytes.Equal(whole, body) {
		t.Fatalf("Complete: %v", err)
	}
	whole[0]++ // the caller's own copy
	if again, _ := src.Complete(ctx); !bytes.Equal(again, body) {
		t.Error("changing what Complete returned changed the body")
	}

	// A fill answered by a stored entry reads the entry's own file, and
	// keeping it again keeps that file.
	for _, stored := range []*Entry{e, small} {
		f := NewFill()
		f.SetHeadEntry(stored)
		f.Finish(nil)
		want := stored.Body
		if stored.off != nil {
			want = body
			if f.mem != stored.off {
				t.Error("SetHeadEntry: the fill does not read the entry's memory file")
			}
		}
		src := FillBody(f, stored.Source().Size())
		if got, err := src.Complete(ctx); err != nil || !bytes.Equal(got, want) {
			t.Errorf("SetHeadEntry: %v, equal %v", err, bytes.Equal(got, want))
		}
		var b bytes.Buffer
		if _, err := src.Copy(ctx, &b, nil, 0, -1); err != nil || !bytes.Equal(b.Bytes(), want) {
			t.Errorf("SetHeadEntry, copied: %v, equal %v", err, bytes.Equal(b.Bytes(), want))
		}
		var kept Entry
		if err := f.Keep(&kept); err != nil || kept.off != stored.off || kept.Size != int64(len(want)) {
			t.Errorf("Keep after SetHeadEntry: %v", err)
		}
	}

	// Stale copies share the file; the tier weighs the body off the heap.
	if st := m.Stats(); st.Bytes < uint64(len(body)) {
		t.Errorf("the tier weighs %d bytes with a %d-byte body off the heap", st.Bytes, len(body))
	}
}

// TestOffHeapSendTo: a region goes to a TCP socket with sendfile, whole
// however small the socket's buffer, also with the socket full when it
// starts.
func TestOffHeapSendTo(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("memory files are Linux's")
	}
	body := pattern(1 << 20)
	o, err := newOffHeap(body)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		b, _ := io.ReadAll(c)
		got <- b
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := c.(*net.TCPConn)
	_ = tc.SetWriteBuffer(4096) // many rounds of waiting for room
	rc, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	r := &Region{o: o, off: 1000, n: int64(len(body)) - 2000}
	n, err := r.SendTo(rc)
	if err != nil || n != int64(len(body))-2000 || r.Len() != 0 {
		t.Fatalf("SendTo: %d bytes, %v, %d left", n, err, r.Len())
	}
	_ = tc.Close()
	select {
	case b := <-got:
		if !bytes.Equal(b, body[1000:len(body)-1000]) {
			t.Fatalf("the peer got %d bytes, not the region's %d", len(b), len(body)-2000)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the peer got nothing")
	}

	// A deadline that passed ends the send with the connection's error.
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetWriteDeadline(time.Now().Add(-time.Second))
	rc2, _ := c2.(*net.TCPConn).SyscallConn()
	if _, err := (&Region{o: o, n: o.n}).SendTo(rc2); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("SendTo past the deadline: %v", err)
	}
}

// TestOffHeapReleased: a body off the heap keeps its memory file while
// anything refers to it, and lets it go once nothing does; beyond the
// descriptor budget a body stays on the heap.
func TestOffHeapReleased(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("memory files are Linux's")
	}
	before := OffHeapFiles()
	m := NewMemory(1 << 30)
	e := &Entry{Status: 200, Header: http.Header{}, Body: pattern(OffHeapMin), Size: OffHeapMin}
	m.Put("k", e)
	if OffHeapFiles() != before+1 {
		t.Fatalf("files open: %d, want %d", OffHeapFiles(), before+1)
	}
	link := fmt.Sprintf("/proc/self/fd/%d", e.off.fd)
	open := func() bool {
		target, err := os.Readlink(link)
		return err == nil && strings.HasPrefix(target, "/memfd:meshcdn-body")
	}
	if !open() {
		t.Fatalf("%s is not the body's memory file", link)
	}
	src := e.Source() // a reader that still sends it
	m.Invalidate("k")
	e = nil
	runtime.GC()
	var b bytes.Buffer
	if _, err := src.Copy(context.Background(), &b, nil, 0, -1); err != nil || b.Len() != OffHeapMin {
		t.Fatalf("a reader of an evicted body: %d bytes, %v", b.Len(), err)
	}
	src = nil
	deadline := time.Now().Add(10 * time.Second)
	for open() {
		if time.Now().After(deadline) {
			t.Fatal("the memory file is still open after nothing refers to the body")
		}
		runtime.GC() // the cleanup runs after a collection
		runtime.Gosched()
	}

	offHeapFiles.Add(offHeapLimit()) // no descriptor left to spare
	defer offHeapFiles.Add(-offHeapLimit())
	full := &Entry{Status: 200, Header: http.Header{}, Body: pattern(OffHeapMin), Size: OffHeapMin}
	m.Put("k", full)
	if full.off != nil || len(full.Body) != OffHeapMin {
		t.Error("a body left the heap beyond the descriptor budget")
	}
}

// TestOffHeapFill: a kept fill of a known length from OffHeapMin bytes on
// writes its body to a memory file, which readers follow while it grows
// and which becomes the stored body as it is: the body is never on the
// heap. A fill cut short gives its readers the error.
func TestOffHeapFill(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("memory files are Linux's")
	}
	body := pattern(3*OffHeapMin + 17)
	head := &Entry{Status: 200, Header: http.Header{}, Size: int64(len(body))}
	f := NewFill()
	f.SetHead(head, len(body), false)
	src := FillBody(f, int64(len(body)))
	ctx := context.Background()
	got := make(chan []byte, 2)
	go func() { // through a buffer
		var b bytes.Buffer
		if _, err := src.Copy(ctx, &b, nil, 0, -1); err != nil {
			t.Errorf("a reader: %v", err)
		}
		got <- b.Bytes()
	}()
	go func() { // regions of the file as it grows
		var rs regionSink
		if _, err := src.Copy(ctx, &rs, nil, 1000, -1); err != nil {
			t.Errorf("a RegionWriter from 1000: %v", err)
		}
		got <- rs.got.Bytes()
	}()
	for p := body; len(p) > 0; p = p[min(len(p), 5000):] {
		if err := f.Append(ctx, p[:min(len(p), 5000)]); err != nil {
			t.Fatal(err)
		}
	}
	if len(f.Bytes()) != 0 {
		t.Errorf("%d bytes of the body on the heap", len(f.Bytes()))
	}
	f.Finish(nil)
	for range 2 {
		b := <-got
		if !bytes.Equal(b, body) && !bytes.Equal(b, body[1000:]) {
			t.Errorf("a reader got %d bytes, not the body", len(b))
		}
	}
	whole, err := src.Complete(ctx)
	if err != nil || !bytes.Equal(whole, body) {
		t.Errorf("Complete: %v", err)
	}
	e := *head
	if err := f.Keep(&e); err != nil || e.off == nil || e.Body != nil || e.Size != int64(len(body)) {
		t.Fatalf("Keep: %v (off %v, %d bytes on the heap, size %d)", err, e.off != nil, len(e.Body), e.Size)
	}
	m := NewMemory(1 << 30)
	m.Put("k", &e)
	var b bytes.Buffer
	if _, err := e.Source().Copy(ctx, &b, nil, 0, -1); err != nil || !bytes.Equal(b.Bytes(), body) {
		t.Errorf("the stored body: %d bytes, %v", b.Len(), err)
	}
	if _, err := syscall.Write(e.off.fd, []byte("x")); !errors.Is(err, syscall.EPERM) {
		t.Errorf("writing to the stored body's file: %v, want EPERM", err)
	}

	cut := NewFill()
	cut.SetHead(head, len(body), false)
	_ = cut.Append(ctx, body[:OffHeapMin])
	cut.Finish(io.ErrUnexpectedEOF)
	var c bytes.Buffer
	if _, err := FillBody(cut, int64(len(body))).Copy(ctx, &c, nil, 0, -1); !errors.Is(err, ErrFillAborted) {
		t.Errorf("a reader of a fill cut short: %v", err)
	}
}

// TestOffHeapEvicted: bodies that never touch the heap, evicted from a
// small tier, release their memory files without waiting for the heap to
// grow: the tier starts a collection once enough of them have left.
func TestOffHeapEvicted(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("memory files are Linux's")
	}
	const size = 100 << 10
	chunk := pattern(size)
	m := NewMemory(2 << 20)
	runtime.GC()
	before := OffHeapFiles()
	ctx := context.Background()
	for i := range 300 { // 30 MiB through a 2 MiB tier
		f := NewFill()
		f.SetHead(&Entry{Status: 200, Header: http.Header{}}, size, false)
		if err := f.Append(ctx, chunk); err != nil {
			t.Fatal(err)
		}
		f.Finish(nil)
		var e Entry
		if err := f.Keep(&e); err != nil || e.off == nil {
			t.Fatalf("Keep: %v", err)
		}
		m.Put(fmt.Sprint(i), &e)
	}
	// At most the tier's own, what a collection per collectMin leaves,
	// and the files of the last collection whose cleanups have not run.
	bound := int64((2<<20)+2*collectMin) / size
	deadline := time.Now().Add(10 * time.Second)
	for OffHeapFiles()-before > bound {
		if time.Now().After(deadline) {
			t.Fatalf("%d memory files open with a 2 MiB tier of 100 KiB bodies (bound %d)", OffHeapFiles()-before, bound)
		}
		runtime.Gosched() // the cleanups of the last collection run
	}
}

// TestOffHeapSealWhileSent: a fill's memory file is sealed although a
// socket still holds pages sendfile gave it (a client that follows the
// fill and has not read yet).
func TestOffHeapSealWhileSent(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("memory files are Linux's")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c // read only after the seal
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer := <-accepted
	if peer == nil {
		t.Fatal("no connection")
	}
	defer peer.Close()
	body := pattern(2 * OffHeapMin)
	o, err := growingOffHeap()
	if err != nil {
		t.Fatal(err)
	}
	if err := o.append(body[:OffHeapMin]); err != nil {
		t.Fatal(err)
	}
	rc, _ := c.(*net.TCPConn).SyscallConn()
	if n, err := (&Region{o: o, n: OffHeapMin}).SendTo(rc); err != nil || n != OffHeapMin {
		t.Fatalf("SendTo: %d, %v", n, err)
	}
	if err := o.append(body[OffHeapMin:]); err != nil {
		t.Fatal(err)
	}
	if err := o.seal(); err != nil {
		t.Fatalf("seal with pages in a socket's queue: %v", err)
	}
	if _, err := syscall.Write(o.fd, []byte("x")); !errors.Is(err, syscall.EPERM) {
		t.Errorf("writing to the sealed file: %v, want EPERM", err)
	}
	got := make([]byte, OffHeapMin)
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil || !bytes.Equal(got, body[:OffHeapMin]) {
		t.Errorf("the peer read %v, equal %v", err, bytes.Equal(got, body[:OffHeapMin]))
	}
}
