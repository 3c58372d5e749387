// Package connlimit bounds the client connections a node holds: in all,
// and per client address. Every open connection costs memory (buffers, a
// goroutine, TLS state), and an idle keep-alive connection holds it for the
// server's idle timeout, so a client that opens connections and sends
// nothing could otherwise hold as many as it likes.
//
// A Limiter wraps the client listeners. A connection past a limit makes
// room by closing the connection that has been idle the longest (between
// two requests, as net/http's ConnState reports; one of the same address
// for the per-address limit), as nginx reuses idle keep-alive connections
// under pressure; when none is idle, the new connection is closed at once.
// Closing an idle keep-alive connection is what HTTP clients expect of a
// server: they retry on a new one.
package connlimit

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
)

// Why a connection was refused.
const (
	ReasonTotal = "max_connections"
	ReasonPerIP = "max_connections_per_ip"
)

// Config is a Limiter's limits and hooks.
type Config struct {
	// Max is how many client connections may be open at once, on every
	// listener together; 0 or less means no limit.
	Max int
	// PerIP is how many of them one client address may hold; 0 or less
	// means no limit.
	PerIP int
	// Refused, when set, is told of each connection closed at once, with
	// the reason (ReasonTotal or ReasonPerIP). It must not block.
	Refused func(reason string)
	// IdleClosed, when set, is told of each idle connection closed to make
	// room. It must not block.
	IdleClosed func(reason string)
}

// Limiter counts connections and closes what the limits do not allow. It
// is safe for concurrent use.
type Limiter struct {
	cfg  Config
	mu   sync.Mutex
	open int
	ips  map[netip.Addr]*client
	idle idleList // longest idle first
	// bare are the counted connections handed out bare (see Bare), by the
	// connection a server holds.
	bare map[net.Conn]*conn
}

// client is what one address holds.
type client struct {
	open int
	idle idleList // longest idle first
}

// New returns a Limiter with cfg's limits.
func New(cfg Config) *Limiter {
	return &Limiter{cfg: cfg, ips: make(map[netip.Addr]*client), bare: make(map[net.Conn]*conn)}
}

// Open is how many connections are open.
func (l *Limiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// Idle is how many open connections are idle between two requests.
func (l *Limiter) Idle() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.idle.n
}

// Listen returns ln with each accepted connection counted, and closed at
// once when the limits allow it no room.
func (l *Limiter) Listen(ln net.Listener) net.Listener { return listener{ln, l} }

type listener struct {
	net.Listener
	l *Limiter
}

func (ln listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc := ln.l.admit(c); tc != nil {
			return tc, nil
		}
	}
}

// admit counts c, making room when it can, or closes it and returns nil.
func (l *Limiter) admit(c net.Conn) net.Conn {
	ip := addrOf(c.RemoteAddr())
	var victims []*conn
	var victimReason string
	l.mu.Lock()
	cl := l.ips[ip]
	if cl == nil {
		cl = &client{idle: idleList{perIP: true}}
	}
	reason := ""
	if l.cfg.PerIP > 0 && cl.open >= l.cfg.PerIP {
		if v := cl.idle.head; v != nil {
			victims, victimReason = append(victims, v), ReasonPerIP
			l.forgetLocked(v)
		} else {
			reason = ReasonPerIP
		}
	}
	if reason == "" && l.cfg.Max > 0 && l.open-len(victims) >= l.cfg.Max {
		if v := l.idle.head; v != nil {
			victims, victimReason = append(victims, v), ReasonTotal
			l.forgetLocked(v)
		} else {
			reason = ReasonTotal
		}
	}
	var tc *conn
	if reason == "" {
		tc = &conn{Conn: c, l: l, ip: ip}
		if cl.open == 0 {
			l.ips[ip] = cl
		}
		cl.open++
		l.open++
	}
	l.mu.Unlock()
	for _, v := range victims {
		_ = v.Conn.Close()
		if l.cfg.IdleClosed != nil {
			l.cfg.IdleClosed(victimReason)
		}
	}
	if tc == nil {
		_ = c.Close()
		if l.cfg.Refused != nil {
			l.cfg.Refused(reason)
		}
		return nil
	}
	return tc
}

// forgetLocked stops counting c: it was closed, or is being closed.
func (l *Limiter) forgetLocked(c *conn) {
	if c.gone {
		return
	}
	c.gone = true
	l.setIdleLocked(c, false)
	l.open--
	if cl := l.ips[c.ip]; cl != nil {
		if cl.open--; cl.open == 0 {
			delete(l.ips, c.ip)
		}
	}
}

func (l *Limiter) setIdleLocked(c *conn, idle bool) {
	switch {
	case idle && !c.idle && !c.gone:
		c.idle = true
		l.idle.push(c)
		l.ips[c.ip].idle.push(c)
	case !idle && c.idle:
		c.idle = false
		l.idle.remove(c)
		l.ips[c.ip].idle.remove(c)
	}
}

// idleList is a list of idle connections threaded through the connections
// themselves, so that a connection going idle and active again, as it does
// with every request, costs no allocation. A connection is in two: the
// limiter's (its links all) and its address's (same).
type idleList struct {
	head, tail *conn
	n          int
	perIP      bool // the list of an address: it uses the links same
}

// links are a connection's neighbours in one idleList.
type links struct{ prev, next *conn }

func (il *idleList) of(c *conn) *links {
	if il.perIP {
		return &c.same
	}
	return &c.all
}

func (il *idleList) push(c *conn) {
	*il.of(c) = links{prev: il.tail}
	if il.tail == nil {
		il.head = c
	} else {
		il.of(il.tail).next = c
	}
	il.tail = c
	il.n++
}

func (il *idleList) remove(c *conn) {
	l := il.of(c)
	if l.prev == nil {
		il.head = l.next
	} else {
		il.of(l.prev).next = l.next
	}
	if l.next == nil {
		il.tail = l.prev
	} else {
		il.of(l.next).prev = l.prev
	}
	*l = links{}
	il.n--
}

// ConnState is http.Server.ConnState for servers of Listen's connections
// (directly, or under TLS and other wrappers that have a NetConn method, or
// bare): it learns which connections are idle between two requests, and
// when a bare one is closed.
func (l *Limiter) ConnState(c net.Conn, s http.ConnState) {
	var idle bool
	switch s {
	case http.StateIdle:
		idle = true
	case http.StateActive, http.StateHijacked:
	case http.StateClosed:
		l.mu.Lock()
		if tc, ok := l.bare[c]; ok {
			delete(l.bare, c)
			l.forgetLocked(tc)
		}
		l.mu.Unlock()
		return
	default:
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	tc := unwrap(c)
	if tc == nil {
		tc = l.bare[c]
	}
	if tc == nil || tc.l != l {
		return
	}
	l.setIdleLocked(tc, idle)
}

// Bare returns the connection that c, one of Listen's, counts, for a
// server that needs the connection's own type (fasthttp sends a response's
// header and body with one writev only to a *net.TCPConn). The limiter
// then follows it by ConnState: its StateClosed ends the count (a server
// that took a hijacked connection over reports it when it closes it). c
// itself is not to be used afterwards; a connection Listen did not count
// comes back as it is.
func (l *Limiter) Bare(c net.Conn) net.Conn {
	tc, ok := c.(*conn)
	if !ok || tc.l != l {
		return c
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if tc.gone {
		return c // already closed: whoever holds it finds out
	}
	l.bare[tc.Conn] = tc
	return tc.Conn
}

// unwrap finds the limiter's connection under wrappers such as tls.Conn.
func unwrap(c net.Conn) *conn {
	for range 8 {
		if tc, ok := c.(*conn); ok {
			return tc
		}
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		c = w.NetConn()
	}
	return nil
}

// conn is a counted connection. Its fields other than Conn are guarded by
// the limiter's mutex.
type conn struct {
	net.Conn
	l         *Limiter
	ip        netip.Addr
	gone      bool
	idle      bool
	all, same links // in the limiter's idle list, and in its address's
}

// NetConn returns the connection c counts.
func (c *conn) NetConn() net.Conn { return c.Conn }

// ReadFrom hands a body to the connection itself, so that a TCP
// connection sends a file with sendfile.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

func (c *conn) Close() error {
	c.l.mu.Lock()
	c.l.forgetLocked(c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
