package node

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcdn/meshcdn/node/acmecert"
	"github.com/meshcdn/meshcdn/node/site"
)

// autoCerts obtains and shares the certificates of the sites with acme:
// true. In a mesh one member orders each site's certificate, the ring owner
// of "acme/" and the site's first host; the others take it from that member
// over the peer protocol. Every member keeps a copy on disk.
type autoCerts struct {
	mgr   *acmecert.Manager
	sites []acmeSite
	check time.Duration // how often each site's certificate is looked at

	mu    sync.Mutex
	certs map[string]*acmecert.Certificate // by name
	retry map[string]time.Time             // a failed order is not tried again before

	orders *prometheus.CounterVec
}

// acmeSite is a site whose certificate comes over ACME.
type acmeSite struct {
	name  string // its first host: the certificate's name
	id    string // its id in the HTTPS listener's certificates
	hosts []string
}

// acmeKey is the key whose owner on the ring over every region orders
// name's certificate.
func acmeKey(name string) string { return "acme/" + name }

// newAutoCerts sets up ACME for the sites that ask for it, nil when none
// does.
func (n *Node) newAutoCerts(sites []*site.Site) (*autoCerts, error) {
	a := &autoCerts{certs: map[string]*acmecert.Certificate{}, retry: map[string]time.Time{}, check: time.Minute}
	for i, s := range sites {
		if s.ACME {
			a.sites = append(a.sites, acmeSite{name: s.Hosts[0], id: strconv.Itoa(i), hosts: s.Hosts})
		}
	}
	if len(a.sites) == 0 {
		return nil, nil
	}
	c := n.cfg.ACME
	dir := c.Dir
	if dir == "" {
		dir = filepath.Join(n.cfg.CacheDir, "acme")
	}
	mgr, err := acmecert.New(acmecert.Config{Directory: c.Directory, Email: c.Email, Roots: c.Roots, Dir: dir,
		Log: n.log.With("component", "acme")})
	if err != nil {
		return nil, err
	}
	a.mgr = mgr
	if n.cfg.Mesh != nil && n.cfg.Mesh.Fast {
		a.check = 200 * time.Millisecond
	}
	a.orders = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_acme_orders_total", Help: "Certificate orders this node sent to the ACME CA, by result (ok, failed).",
	}, []string{"result"})
	n.metrics.reg.MustRegister(a.orders)
	for _, s := range a.sites {
		if c, err := mgr.Load(s.name); err == nil && c.Covers(s.hosts) {
			a.certs[s.name] = c
			if err := n.https.certs.SetManaged(s.id, c.CertPEM, c.KeyPEM); err != nil {
				n.log.Warn("the kept ACME certificate does not load", "name", s.name, "err", err)
			}
		}
	}
	n.https.setExpiry()
	return a, nil
}

// runACME looks at each ACME site's certificate every check, until the node
// stops: the owner orders one when there is none or it is due for renewal,
// the others take the owner's when it is newer than theirs.
func (n *Node) runACME() {
	a := n.acme
	t := time.NewTicker(a.check)
	defer t.Stop()
	for {
		if n.ready.Load() && n.ringSettled() {
			for _, s := range a.sites {
				n.acmeSite(s)
			}
		}
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ringSettled reports whether this node is in a ring that has not changed
// for a while, so that one member alone is the owner of a name.
func (n *Node) ringSettled() bool {
	return n.mesh == nil || n.mesh.Settled()
}

// acmeSite brings one site's certificate up to date.
func (n *Node) acmeSite(s acmeSite) {
	a := n.acme
	a.mu.Lock()
	have, retry := a.certs[s.name], a.retry[s.name]
	a.mu.Unlock()
	now := time.Now()
	owner, addr, remote := n.globalOwner(acmeKey(s.name))
	if remote {
		// Another member orders: take its certificate when it is newer.
		ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
		defer cancel()
		certPEM, keyPEM, err := n.mesh.Peers().Certificate(ctx, addr, s.name)
		if err != nil || certPEM == nil {
			return // it has none yet, or cannot be reached: keep what is here
		}
		c, err := acmecert.Parse(certPEM, keyPEM)
		if err != nil {
			n.log.Warn("the certificate a member sent does not load", "name", s.name, "member", owner, "err", err)
			return
		}
		if have == nil || c.NotAfter.After(have.NotAfter) {
			n.installACME(s, c)
		}
		return
	}
	if have != nil && have.Covers(s.hosts) && now.Before(have.RenewAt()) || now.Before(retry) {
		return
	}
	if c := n.memberCertificate(s, have); c != nil {
		n.installACME(s, c) // a member (the previous owner) has a newer one
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Minute)
	defer cancel()
	c, err := a.mgr.Obtain(ctx, s.hosts)
	if err != nil {
		a.orders.WithLabelValues("failed").Inc()
		wait := 10 * a.check
		if have != nil && now.Before(have.NotAfter) {
			wait = max(wait, time.Minute)
		}
		a.mu.Lock()
		a.retry[s.name] = now.Add(wait)
		a.mu.Unlock()
		if !errors.Is(err, context.Canceled) {
			n.log.Error("ACME order failed", "name", s.name, "hosts", s.hosts, "retry_in", wait, "err", err)
		}
		return
	}
	a.orders.WithLabelValues("ok").Inc()
	n.installACME(s, c)
}

// memberCertificate asks the other members for a certificate of s newer
// than have and not due for renewal: after a ring change the new owner
// takes over the one the previous owner obtained instead of ordering.
func (n *Node) memberCertificate(s acmeSite, have *acmecert.Certificate) *acmecert.Certificate {
	if n.mesh == nil {
		return nil
	}
	now := time.Now()
	for _, m := range n.mesh.Members() {
		if m.Name == n.cfg.Name || m.PeerAddr == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		certPEM, keyPEM, err := n.mesh.Peers().Certificate(ctx, m.PeerAddr, s.name)
		cancel()
		if err != nil || certPEM == nil {
			continue
		}
		c, err := acmecert.Parse(certPEM, keyPEM)
		if err == nil && c.Covers(s.hosts) && now.Before(c.RenewAt()) && (have == nil || c.NotAfter.After(have.NotAfter)) {
			return c
		}
	}
	return nil
}

// installACME keeps c on disk and serves it.
func (n *Node) installACME(s acmeSite, c *acmecert.Certificate) {
	a := n.acme
	if err := n.https.certs.SetManaged(s.id, c.CertPEM, c.KeyPEM); err != nil {
		n.log.Error("an ACME certificate does not load", "name", s.name, "err", err)
		return
	}
	if err := a.mgr.Save(s.name, c); err != nil {
		n.log.Warn("keeping the ACME certificate on disk", "name", s.name, "err", err)
	}
	a.mu.Lock()
	a.certs[s.name] = c
	delete(a.retry, s.name)
	a.mu.Unlock()
	n.https.setExpiry()
	n.log.Info("ACME certificate in use", "name", s.name, "hosts", c.Names, "expires", c.NotAfter)
}

// acmeCertificate is peer.Local's: the certificate this node holds for
// name.
func (n *Node) acmeCertificate(name string) (certPEM, keyPEM []byte) {
	if n.acme == nil {
		return nil, nil
	}
	n.acme.mu.Lock()
	defer n.acme.mu.Unlock()
	if c := n.acme.certs[name]; c != nil {
		return c.CertPEM, c.KeyPEM
	}
	return nil, nil
}

// acmeChallenge is peer.Local's: the key authorization of a token of an
// order this node runs.
func (n *Node) acmeChallenge(token string) (string, bool) {
	if n.acme == nil {
		return "", false
	}
	return n.acme.mgr.ChallengeResponse(token)
}

// challenge is the pipeline's Challenge: the key authorization of a token
// of an ACME site's order, from this node's order or from the member that
// runs it.
func (n *Node) challenge(ctx context.Context, st *site.Site, token string) (string, bool) {
	if ka, found := n.acme.mgr.ChallengeResponse(token); found {
		return ka, true
	}
	if _, addr, remote := n.globalOwner(acmeKey(st.Hosts[0])); remote {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ka, _ := n.mesh.Peers().Challenge(ctx, addr, token)
		return ka, ka != ""
	}
	return "", false
}
