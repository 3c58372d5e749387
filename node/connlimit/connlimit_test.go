package connlimit

import (
	"bufio"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// server serves h behind l on loopback and returns its address.
func server(t *testing.T, l *Limiter, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ConnState: l.ConnState, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l.Listen(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// peerConn is one keep-alive connection from a loopback address of its own.
type peerConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, from, addr string) *peerConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &peerConn{c: c, br: bufio.NewReader(c)}
}

// get sends a request and reads its response; "" and the error when the
// connection was closed instead.
func (c *peerConn) get(path string) (string, error) {
	if _, err := io.WriteString(c.c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// closed reports whether the server closed c (a read ends at once).
func (c *peerConn) closed() bool {
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.br.ReadByte()
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func waitIdle(t *testing.T, l *Limiter, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		idle := l.idle.n
		l.mu.Unlock()
		if idle == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle connections; want %d", idle, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPerIP: an address at its limit makes room by closing its own
// longest-idle connection; with none idle its new connection is closed at
// once, while another address is served.
func TestPerIP(t *testing.T) {
	var mu sync.Mutex
	var refused, idleClosed []string
	l := New(Config{PerIP: 3, Max: 100,
		Refused:    func(r string) { mu.Lock(); refused = append(refused, r); mu.Unlock() },
		IdleClosed: func(r string) { mu.Lock(); idleClosed = append(idleClosed, r); mu.Unlock() }})
	release := make(chan struct{})
	addr := server(t, l, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	})
	var first []*peerConn
	for i := range 3 {
		c := dial(t, "127.0.0.2", addr)
		if body, err := c.get("/"); body != "ok" {
			t.Fatalf("a connection under the limit: %q %v", body, err)
		}
		first = append(first, c)
		waitIdle(t, l, i+1) // idle in this order
	}
	fourth := dial(t, "127.0.0.2", addr)
	if body, err := fourth.get("/"); body != "ok" {
		t.Fatalf("a fourth connection with idle ones: %q %v", body, err)
	}
	if !first[0].closed() {
		t.Error("the longest-idle connection of the address was not closed")
	}
	// Every connection of the address busy: the next is closed at once.
	busy := []*peerConn{first[1], first[2], fourth}
	var wg sync.WaitGroup
	for _, c := range busy {
		if _, err := io.WriteString(c.c, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	waitIdle(t, l, 0)
	if !dial(t, "127.0.0.2", addr).closed() {
		t.Error("a connection over the limit with none idle was not closed at once")
	}
	if body, err := dial(t, "127.0.0.3", addr).get("/"); body != "ok" {
		t.Errorf("another address: %q %v", body, err)
	}
	close(release)
	for _, c := range busy {
		wg.Go(func() {
			if resp, err := http.ReadResponse(c.br, nil); err != nil {
				t.Errorf("a held request: %v", err)
			} else {
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(refused) != 1 || refused[0] != ReasonPerIP || len(idleClosed) != 1 || idleClosed[0] != ReasonPerIP {
		t.Errorf("refused %v, idle closed %v; want one of each for %s", refused, idleClosed, ReasonPerIP)
	}
}

// TestTotal: at the node's limit the longest-idle connection of any
// address makes room; with none idle a new connection is closed at once;
// closed connections give their room back.
func TestTotal(t *testing.T) {
	l := New(Config{Max: 2, PerIP: 10})
	release := make(chan struct{})
	addr := server(t, l, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	})
	a := dial(t, "127.0.0.4", addr)
	if _, err := a.get("/"); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, l, 1)
	b := dial(t, "127.0.0.5", addr)
	if _, err := io.WriteString(b.c, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c := dial(t, "127.0.0.6", addr)
	if body, err := c.get("/"); body != "ok" {
		t.Fatalf("a connection with an idle one to close: %q %v", body, err)
	}
	if !a.closed() {
		t.Error("the idle connection was not closed for the new one")
	}
	if _, err := io.WriteString(c.c, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, l, 0)
	if !dial(t, "127.0.0.7", addr).closed() {
		t.Error("a connection over the limit with none idle was not closed at once")
	}
	close(release)
	for _, x := range []*peerConn{b, c} {
		if resp, err := http.ReadResponse(x.br, nil); err != nil {
			t.Fatalf("a held request: %v", err)
		} else {
			resp.Body.Close()
		}
		x.c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for l.Open() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := l.Open(); n != 0 {
		t.Errorf("%d connections counted after all closed", n)
	}
	if body, err := dial(t, "127.0.0.7", addr).get("/"); body != "ok" {
		t.Errorf("after the others closed: %q %v", body, err)
	}
}

// TestIdleList: the intrusive lists keep idle connections oldest first
// through pushes and removals anywhere, each list on its own links.
func TestIdleList(t *testing.T) {
	var all idleList
	same := idleList{perIP: true}
	conns := make([]*conn, 50)
	for i := range conns {
		conns[i] = &conn{}
	}
	var model []*conn // the order both lists must have
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		c := conns[rng.IntN(len(conns))]
		if i := slices.Index(model, c); i >= 0 {
			all.remove(c)
			same.remove(c)
			model = slices.Delete(model, i, i+1)
		} else {
			all.push(c)
			same.push(c)
			model = append(model, c)
		}
		for _, il := range []*idleList{&all, &same} {
			var got []*conn
			for c := il.head; c != nil; c = il.of(c).next {
				got = append(got, c)
			}
			var back []*conn
			for c := il.tail; c != nil; c = il.of(c).prev {
				back = append(back, c)
			}
			slices.Reverse(back)
			if !slices.Equal(got, model) || !slices.Equal(back, model) || il.n != len(model) {
				t.Fatalf("list (perIP %v) holds %d forward, %d backward, n %d; want %d in order", il.perIP, len(got), len(back), il.n, len(model))
			}
		}
	}
}

// TestBare: a connection handed out bare is still counted, goes idle and
// active by ConnState, makes room when it is the longest idle, and leaves
// the count once ConnState reports it closed, once.
func TestBare(t *testing.T) {
	l := New(Config{Max: 1})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lln := l.Listen(ln)
	accept := func() net.Conn {
		t.Helper()
		c, err := lln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first := dial(t, "127.0.0.1", ln.Addr().String())
	raw := l.Bare(accept())
	if _, ok := raw.(*net.TCPConn); !ok {
		t.Fatalf("Bare gave a %T; want the TCP connection", raw)
	}
	if l.Open() != 1 {
		t.Fatalf("%d open; want the bare connection counted", l.Open())
	}
	l.ConnState(raw, http.StateIdle)
	if l.Idle() != 1 {
		t.Fatalf("%d idle; want the bare connection idle", l.Idle())
	}
	// A second connection past Max: the idle bare one makes room.
	dial(t, "127.0.0.1", ln.Addr().String())
	second := accept()
	defer second.Close()
	_ = first.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := first.c.Read(make([]byte, 1)); err == nil {
		t.Error("the idle bare connection is still open")
	}
	l.ConnState(raw, http.StateClosed) // its server finds it closed
	l.ConnState(raw, http.StateClosed)
	if l.Open() != 1 || l.Idle() != 0 {
		t.Errorf("%d open, %d idle; want the second connection alone", l.Open(), l.Idle())
	}
	_ = second.Close()
	if l.Open() != 0 {
		t.Errorf("%d open after both closed", l.Open())
	}
}
