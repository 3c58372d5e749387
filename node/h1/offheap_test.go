package h1

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/node/cache"
)

// TestOffHeapBodies: a stored body kept off the heap goes to a TCP
// connection with sendfile, whole or in part, answered while the handler
// runs or by a detached rest; HEAD sends none of it; pipelined requests
// stay framed.
func TestOffHeapBodies(t *testing.T) {
	body := make([]byte, 200<<10)
	for i := range body {
		body[i] = byte(i % 251)
	}
	m := cache.NewMemory(1 << 30)
	e := &cache.Entry{Status: 200, Header: http.Header{}, Body: bytes.Clone(body), Size: int64(len(body))}
	m.Put("k", e)
	if e.Body != nil {
		t.Fatal("the body is still on the heap")
	}
	addr := start(t, func(w http.ResponseWriter, r *http.Request) {
		src := e.Source()
		send := func(w http.ResponseWriter, off, n int64) {
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			w.WriteHeader(http.StatusOK)
			if _, err := src.Copy(r.Context(), w, w, off, n); err != nil {
				t.Errorf("%s %s: %v", r.Method, r.URL.Path, err)
			}
		}
		switch r.URL.Path {
		case "/whole":
			send(w, 0, src.Size())
		case "/part":
			send(w, 10, 100<<10)
		case "/more":
			// What follows a body kept to be sent as it is.
			w.Header().Set("Content-Length", strconv.FormatInt(src.Size()+1+4+5, 10))
			_, _ = src.Copy(r.Context(), w, w, 0, -1)
			_, _ = io.WriteString(w, "|")
			_, _ = cache.Bytes("tail|").Copy(r.Context(), w, w, 0, 4)
			_, _ = src.Copy(r.Context(), w, w, 0, 5)
		case "/detached":
			w.(detacher).Detach(func(w http.ResponseWriter) { send(w, 0, src.Size()) })
		}
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	before := sentFromFiles.Load()
	reqs := []struct {
		method, path string
		want         []byte
	}{
		{"GET", "/whole", body},
		{"HEAD", "/whole", nil},
		{"GET", "/part", body[10 : 10+100<<10]},
		{"GET", "/detached", body},
		{"GET", "/more", append(append(bytes.Clone(body), "|tail"...), body[:5]...)},
		{"GET", "/whole", body},
	}
	var all bytes.Buffer
	for _, q := range reqs {
		fmt.Fprintf(&all, "%s %s HTTP/1.1\r\nHost: site.test\r\n\r\n", q.method, q.path)
	}
	if _, err := c.Write(all.Bytes()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var sent int64
	for _, q := range reqs {
		resp, err := http.ReadResponse(br, &http.Request{Method: q.method})
		if err != nil {
			t.Fatalf("%s %s: %v", q.method, q.path, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Equal(b, q.want) {
			t.Fatalf("%s %s: %d bytes (%v), want %d", q.method, q.path, len(b), err, len(q.want))
		}
		if q.method == "HEAD" && resp.ContentLength != int64(len(body)) {
			t.Errorf("HEAD: Content-Length %d", resp.ContentLength)
		}
		if q.path != "/more" {
			sent += int64(len(q.want))
		}
	}
	if got := sentFromFiles.Load() - before; got != sent {
		t.Errorf("%d bytes went with sendfile, want all %d", got, sent)
	}
}
