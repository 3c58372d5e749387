// Package chanln hands connections from one accept loop to the server of
// their protocol: a net.Listener fed by a channel, and the accept loop
// itself, with net/http's back-off when accepting fails for a while.
package chanln

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// Listener is a net.Listener fed with connections by Put.
type Listener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

// New returns a listener whose connections arrive at addr.
func New(addr net.Addr) *Listener {
	return &Listener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// Put hands c to the listener's server, or closes it if the listener or
// ctx is closed first.
func (l *Listener) Put(ctx context.Context, c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		_ = c.Close()
	case <-ctx.Done():
		_ = c.Close()
	}
}

// Accept waits for the next connection Put hands over.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close makes Accept fail; connections Put after it are closed.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr is the address the connections arrive at.
func (l *Listener) Addr() net.Addr { return l.addr }

// Serve accepts ln's connections until it is closed, each handed to
// handle on a goroutine of its own; it returns once they have all
// returned. An accept error that passes (out of file descriptors) is
// retried after a back-off, as net/http does, until ctx ends.
func Serve(ctx context.Context, ln net.Listener, handle func(net.Conn)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
				case <-ctx.Done():
				}
				continue
			}
			return
		}
		delay = 0
		wg.Go(func() { handle(c) })
	}
}
