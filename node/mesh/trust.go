package mesh

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// trust records which members have proven their names over mutual TLS:
// with mesh TLS, gossip only says who might be a member, and a member
// enters the ring, the hand-off sources and the drain offers only once its
// peer address has shown a certificate of the cluster CA for its name.
type trust struct {
	mu      sync.Mutex
	proven  map[string]string    // member → the peer address it proved its name at
	pending map[string]bool      // name+"\x00"+addr → a check runs
	failed  map[string]time.Time // name+"\x00"+addr → when its last check failed
}

// trustRetry is how long after a failed check a member is checked again.
const trustRetry = 2 * time.Second

// trusted reports whether member name may own keys and be asked at addr:
// always without mesh TLS, and for this node itself.
func (m *Mesh) trusted(name, addr string) bool {
	if m.tls == nil || name == m.self.Name {
		return true
	}
	m.trust.mu.Lock()
	defer m.trust.mu.Unlock()
	return addr != "" && m.trust.proven[name] == addr
}

// check starts a check of member name at addr unless one runs or the last
// failed within trustRetry. A success rebuilds the ring.
func (m *Mesh) check(name, addr string) {
	if addr == "" {
		return
	}
	t := &m.trust
	k := name + "\x00" + addr
	t.mu.Lock()
	if t.pending[k] || m.ctx.Err() != nil || time.Since(t.failed[k]) < trustRetry { // stopping, or checked lately
		t.mu.Unlock()
		return
	}
	t.pending[k] = true
	t.mu.Unlock()
	m.wg.Go(func() {
		err := m.prove(name, addr)
		t.mu.Lock()
		delete(t.pending, k)
		if err == nil {
			t.proven[name] = addr
			delete(t.failed, k)
		} else {
			t.failed[k] = time.Now()
		}
		t.mu.Unlock()
		if err != nil {
			if m.ctx.Err() == nil {
				m.log.Warn("member did not prove its name: it owns nothing and is not asked for anything", "member", name, "addr", addr, "err", err)
			}
			return
		}
		m.log.Info("member proved its name", "member", name, "addr", addr)
		select {
		case m.recheck <- struct{}{}:
		default:
		}
	})
}

// prove completes a mutual TLS handshake with addr, which must show a
// certificate of the cluster CA naming member name.
func (m *Mesh) prove(name, addr string) error {
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.PeerTimeout)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: m.tls.ClientConfig(name)}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}
