package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"

	"github.com/meshcdn/meshcdn/node/slice"

	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshcdn/meshcdn/node/access"
	"github.com/meshcdn/meshcdn/node/admin"
	"github.com/meshcdn/meshcdn/node/pipeline"
	"github.com/meshcdn/meshcdn/node/purge"
	"github.com/meshcdn/meshcdn/node/site"
	"github.com/meshcdn/meshcdn/node/tlsconf"
	adminv1 "github.com/meshcdn/meshcdn/proto/meshcdn/admin/v1"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// startAdmin binds the admin listener and serves AdminService, health and
// reflection on it.
func (n *Node) serveAdmin(tlsCfg *tls.Config) {
	ln := n.adminLn
	var opts []grpc.ServerOption
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	if n.cfg.AdminToken != "" {
		unary, stream := admin.Auth(n.cfg.AdminToken)
		opts = append(opts, grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
	}
	s := grpc.NewServer(opts...)
	adminv1.RegisterAdminServiceServer(s, admin.NewServer(adminView{n}))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	hs.SetServingStatus(adminv1.AdminService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	reflection.Register(s)
	n.admin, n.adminHealth = s, hs
	n.wg.Go(func() {
		if err := s.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			n.log.Error("admin listener failed", "err", err)
		}
	})
}

// adminTLS is the admin listener's TLS, nil without an admin certificate:
// the node's admin certificate and, with a client CA, only clients with an
// admin certificate it signed (meshcdn ca issue --role admin): when the
// client CA is the cluster CA, a member's certificate, which every node
// holds, opens nothing here.
func adminTLS(c Config) (*tls.Config, error) {
	if c.AdminCertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.AdminCertFile, c.AdminKeyFile)
	if err != nil {
		return nil, fmt.Errorf("node: admin certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.AdminClientCAFile != "" {
		pem, err := os.ReadFile(c.AdminClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("node: admin client CA: %w", err)
		}
		cfg.ClientCAs = x509.NewCertPool()
		if !cfg.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("node: admin client CA %s: no PEM certificate", c.AdminClientCAFile)
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("admin: no client certificate")
			}
			if _, ok := tlsconf.AdminName(cs.PeerCertificates[0]); !ok {
				return fmt.Errorf("admin: the client certificate of %q is no admin certificate (meshcdn ca issue --role admin)",
					cs.PeerCertificates[0].Subject.CommonName)
			}
			return nil
		}
	}
	return cfg, nil
}

// stopAdmin drains admin calls until ctx ends, then cuts them off.
func (n *Node) stopAdmin(ctx context.Context) {
	if n.admin == nil {
		return
	}
	n.adminHealth.Shutdown()
	stop := context.AfterFunc(ctx, n.admin.Stop)
	n.admin.GracefulStop()
	stop()
}

// AdminAddr is the bound admin address; empty when the admin API is off.
func (n *Node) AdminAddr() string {
	if n.adminLn == nil {
		return ""
	}
	return n.adminLn.Addr().String()
}

// adminView is the node as the admin service sees it.
type adminView struct{ n *Node }

var _ admin.Cluster = adminView{}

func (v adminView) Name() string { return v.n.cfg.Name }

func (v adminView) Members() []admin.MemberInfo {
	n := v.n
	if n.mesh == nil {
		return []admin.MemberInfo{{Name: n.cfg.Name, State: "alive", HTTPAddr: n.HTTPAddr(), AdminAddr: n.AdminAddr(),
			Version: n.cfg.Version, OwnedShare: 1, Self: true, Ready: n.notReady() == "", Load: int(n.pl.Inflight()), Role: "edge"}}
	}
	shares := n.mesh.RegionShares()
	var out []admin.MemberInfo
	for _, m := range append(n.mesh.Members(), n.mesh.Routers()...) {
		role := "edge"
		if m.Router {
			role = "router"
		}
		out = append(out, admin.MemberInfo{Name: m.Name, State: m.State, Region: m.Region, HTTPAddr: m.HTTPAddr,
			PeerAddr: m.PeerAddr, GossipAddr: m.GossipAddr, AdminAddr: m.AdminAddr, Version: m.Version,
			OwnedShare: shares[m.Name], Self: m.Self, Ready: m.Ready, Load: m.Load, Role: role})
	}
	return out
}

// Failed lists the members that failed within the last hour.
func (v adminView) Failed() []admin.MemberInfo {
	if v.n.mesh == nil {
		return nil
	}
	var out []admin.MemberInfo
	for _, f := range v.n.mesh.Failed() {
		out = append(out, admin.MemberInfo{Name: f.Name, State: "failed"})
	}
	return out
}

func (v adminView) Locate(raw string, replicas, slices int) (admin.Location, error) {
	n := v.n
	st, key, err := n.keyOf(raw)
	if err != nil {
		return admin.Location{}, fmt.Errorf("%w: %v", admin.ErrBadURL, err)
	}
	loc := admin.Location{Site: st.Name, Key: key, Owner: n.cfg.Name}
	if n.mesh != nil {
		r := n.mesh.Ring()
		loc.Owner, _ = r.Owner(loc.Key)
		if replicas > 0 {
			if rs := r.Replicas(loc.Key, replicas+1); len(rs) > 1 {
				loc.Replicas = rs[1:]
			}
		}
		loc.Epoch = n.mesh.Epoch()
		loc.Region = n.mesh.Region()
		if shield := n.pl.ShieldFor(st); shield != "" && shield != loc.Region {
			loc.ShieldOwner, _, _ = n.mesh.OwnerIn(shield, key)
		}
	}
	v.locateSlices(&loc, st, slices)
	return loc, nil
}

// locateSlices adds the owners of the first slices of loc's object to loc,
// for a site that stores objects as slices: slices of them, or all (-1)
// when this node holds the first slice, which gives the length.
func (v adminView) locateSlices(loc *admin.Location, st *site.Site, slices int) {
	n := v.n
	if st.SliceSize == 0 {
		return
	}
	loc.SliceSize = st.SliceSize
	if total, ok := n.pl.SlicedSize(loc.Key, st.SliceSize); ok {
		loc.ObjectSize = total
		if slices == -1 {
			slices = int(min(slice.Count(total, st.SliceSize), admin.MaxSlices))
		}
	}
	for i := range int64(max(slices, 0)) {
		s := admin.SliceOwner{Index: i, Key: slice.Spec{Size: st.SliceSize, Index: i}.Key(loc.Key), Owner: n.cfg.Name}
		if n.mesh != nil {
			s.Owner, _ = n.mesh.Ring().Owner(s.Key)
			if shield := n.pl.ShieldFor(st); shield != "" && shield != loc.Region {
				s.Shield, _, _ = n.mesh.OwnerIn(shield, s.Key)
			}
		}
		loc.Slices = append(loc.Slices, s)
	}
}

func (v adminView) Purge(ctx context.Context, urls, prefixes, tags []string, soft bool) (string, []admin.Receipt, error) {
	id, receipts, err := v.n.purge(ctx, urls, prefixes, tags, soft)
	return id, adminReceipts(receipts), err
}

func (v adminView) PurgeStatus(ctx context.Context, id string) []admin.Receipt {
	return adminReceipts(v.n.purges.Status(ctx, id))
}

func adminReceipts(rs []purge.Receipt) []admin.Receipt {
	out := make([]admin.Receipt, 0, len(rs))
	for _, r := range rs {
		out = append(out, admin.Receipt{Node: r.Node, Applied: r.Applied, Removed: r.Removed, Error: r.Error})
	}
	return out
}

// Drain takes the named member out of the ring, relaying to it if needed;
// with wait, it returns once that member's offers have ended.
func (v adminView) Drain(ctx context.Context, name string, wait bool) (admin.Drained, error) {
	n := v.n
	if name == "" || name == n.cfg.Name {
		d := admin.Drained{Node: n.cfg.Name}
		if err := n.drain(); err != nil || !wait {
			return d, err
		}
		h, err := n.mesh.HandOffDone(ctx)
		d.Taken, d.NotTaken, d.Took = h.Taken, h.NotTaken, h.Took
		return d, err
	}
	for _, m := range v.Members() {
		if m.Name == name && m.Role == "router" {
			return admin.Drained{}, fmt.Errorf("%w: %q is a router, which owns nothing to drain", admin.ErrNotEdge, name)
		}
		if m.Name == name {
			if !wait {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
			}
			h, err := n.mesh.Peers().Drain(ctx, m.PeerAddr, n.cfg.Name, wait)
			return admin.Drained{Node: name, Taken: h.Taken, NotTaken: h.NotTaken, Took: h.Took}, err
		}
	}
	return admin.Drained{}, fmt.Errorf("%w: %q", admin.ErrNoMember, name)
}

// Prefetch fills each URL at its owner, 8 at a time: this node's own keys
// through its handler, others' through a peer fetch whose body is discarded
// here (the owner keeps it).
func (v adminView) Prefetch(ctx context.Context, urls []string, report func(admin.Progress) error) error {
	n := v.n
	var mu sync.Mutex
	var reportErr error
	send := func(p admin.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if reportErr == nil {
			reportErr = report(p)
		}
	}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, raw := range urls {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return context.Cause(ctx)
		}
		wg.Go(func() {
			defer func() { <-sem }()
			send(n.prefetch(ctx, raw))
		})
	}
	wg.Wait()
	return reportErr
}

// prefetch fills one URL at its owner.
func (n *Node) prefetch(ctx context.Context, raw string) (p admin.Progress) {
	p.URL = raw
	loc, err := adminView{n}.Locate(raw, 0, 0)
	if err != nil {
		p.Error = err.Error()
		return p
	}
	p.Node = loc.Owner
	u, _ := url.Parse(raw)
	if name, addr, ok := n.owner(loc.Key); ok {
		resp, err := n.mesh.Peers().Fetch(ctx, addr, &peerv1.FetchRequest{Key: loc.Key, Host: u.Host,
			PathQuery: u.RequestURI(), From: n.cfg.Name, Epoch: n.mesh.Epoch()})
		if err == nil {
			defer resp.Body.Close()
			p.Status, p.CacheStatus = resp.StatusCode, resp.Header.Get("Cache-Status")
			if p.Bytes, err = io.Copy(io.Discard, resp.Body); err != nil {
				p.Error = err.Error()
			}
			return p
		}
		// The owner did not answer (it may be leaving, or the ring just
		// changed): fill it here, as a client's request would be.
		n.log.Info("prefetch: the owner did not answer; filling through this node", "url", raw, "owner", name, "err", err)
		p.Node = n.cfg.Name
	}
	req, err := http.NewRequestWithContext(pipeline.WithOperator(ctx), http.MethodGet, raw, nil)
	if err != nil {
		p.Error = err.Error()
		return p
	}
	req.RequestURI, req.RemoteAddr = u.RequestURI(), "127.0.0.1:0"
	w := &discardWriter{h: http.Header{}}
	defer func() {
		if r := recover(); r != nil { // the handler aborts a response whose origin broke off
			p.Error = "the origin's response broke off"
		}
	}()
	n.ServeHTTP(w, req)
	p.Status, p.Bytes, p.CacheStatus = w.code, w.n, w.h.Get("Cache-Status")
	return p
}

// discardWriter counts a response and keeps nothing of its body.
type discardWriter struct {
	h    http.Header
	code int
	n    int64
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.n += int64(len(p))
	return len(p), nil
}

// Explain reasons about a request as serveCacheable would, without side
// effects: no fill, no promotion, no peer call.
func (v adminView) Explain(raw, method string, header map[string]string) (admin.Explanation, error) {
	n := v.n
	h := http.Header{}
	for k, val := range header {
		h.Set(k, val)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return admin.Explanation{}, fmt.Errorf("%w: %q is not an absolute URL", admin.ErrBadURL, raw)
	}
	var ex admin.Explanation
	if st, ok := n.sites.Lookup(u.Host); ok && st.Access != nil {
		ex.AccessRules = st.Access.Describe()
		d := st.Access.Judge(&access.Request{Path: u.EscapedPath(), RawQuery: u.RawQuery, Header: h, Now: time.Now()})
		switch {
		case d.Reason != "":
			ex.Access = fmt.Sprintf("%d %s", d.Status, d.Reason)
		case d.Signed:
			ex.Access = "signed"
			if err := site.SetPath(u, d.Path); err != nil {
				return admin.Explanation{}, fmt.Errorf("%w: %v", admin.ErrBadURL, err)
			}
			u.RawQuery = d.RawQuery
			raw = u.String()
		default:
			ex.Access = "allowed"
		}
	}
	loc, err := v.Locate(raw, 0, 0)
	if err != nil {
		return admin.Explanation{}, err
	}
	st, _ := n.sites.Lookup(u.Host)
	if err := site.SetPath(u, site.NormalizePath(u.EscapedPath(), st.MergeSlashes)); err != nil {
		return admin.Explanation{}, fmt.Errorf("%w: %v", admin.ErrBadURL, err)
	}
	rule := st.Classify(u.Path)
	ex.Site, ex.Rule, ex.Action, ex.Key, ex.Owner = loc.Site, rule.Name, rule.Action.String(), loc.Key, loc.Owner
	if ex.Access != "" && ex.Access != "allowed" && ex.Access != "signed" {
		ex.Outcome = "denied"
		return ex, nil
	}
	if (method != http.MethodGet && method != http.MethodHead) || rule.Action == site.ActionBypass {
		ex.Outcome = "bypass"
		return ex, nil
	}
	ex.StoreConditions = storeConditions(rule, u.Path, h)
	now := time.Now()
	f := n.pl.Peek(loc.Key, h, now)
	if f.Pass {
		ex.Outcome = "pass"
		return ex, nil
	}
	e := f.Entry
	ex.Tier = f.Tier
	owner := loc.Owner
	if e == nil && st.SliceSize > 0 {
		// Stored as slices, if at all: the first slice stands for it.
		ex.SliceSize = st.SliceSize
		first := slice.Spec{Size: st.SliceSize, Index: 0}.Key(loc.Key)
		if n.mesh != nil {
			owner, _ = n.mesh.Ring().Owner(first)
		}
		f = n.pl.Peek(first, h, now)
		e, ex.Tier = f.Entry, f.Tier
		if total, ok := n.pl.SlicedSize(loc.Key, st.SliceSize); ok {
			ex.ObjectSize = total
			for i := range min(slice.Count(total, st.SliceSize), admin.MaxSlices) {
				if n.pl.Peek(slice.Spec{Size: st.SliceSize, Index: i}.Key(loc.Key), h, now).Entry != nil {
					ex.SlicesHere++
				}
			}
		}
	}
	switch {
	case e != nil:
		ex.Stored = true
		ex.AgeSeconds = int64(e.Age(now) / time.Second)
		ex.TTLSeconds = int64(e.TTL / time.Second)
		ex.TTLSource = e.TTLSource
		ex.Outcome = "stale"
		if e.Fresh(now) {
			ex.Outcome = "hit"
		}
	case owner != n.cfg.Name:
		ex.Outcome = "peer"
	default:
		ex.Outcome = "miss"
	}
	return ex, nil
}

// storeConditions says what a response to a request with header h for
// path must have to be stored, beyond RFC 9111, under rule (see
// httpcache.Decide).
func storeConditions(rule *site.Rule, p string, h http.Header) []string {
	var out []string
	if h.Get("Authorization") != "" {
		out = append(out, "authorization: the request has Authorization: the origin must send public, s-maxage or must-revalidate")
	}
	if h.Get("Cookie") != "" && !rule.Policy.IgnoreCookie {
		out = append(out, "cookie: the request has a Cookie: the origin must send public or a freshness of its own (s-maxage, max-age or Expires)")
	}
	if ext := strings.ToLower(strings.TrimPrefix(path.Ext(p), ".")); rule.Policy.CheckType && ext != "" {
		out = append(out, "content-type-mismatch: unless the origin sends a freshness of its own, its Content-Type must fit ."+ext+" (no HTML, JSON or XML page)")
	}
	return out
}

// Stats gathers every member's counters.
func (v adminView) Stats(ctx context.Context) []admin.NodeStats {
	n := v.n
	members := slices.DeleteFunc(v.Members(), func(m admin.MemberInfo) bool { return m.Role == "router" })
	out := make([]admin.NodeStats, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() {
			out[i].Node = m.Name
			if m.Self {
				out[i].Stats = countersOf(n.localStats())
				return
			}
			ctx, cancel := context.WithTimeout(ctx, purge.Timeout)
			defer cancel()
			s, err := n.mesh.Peers().Stats(ctx, m.PeerAddr)
			if err != nil {
				out[i].Error = err.Error()
				return
			}
			out[i].Stats = countersOf(s)
		})
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b admin.NodeStats) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// countersOf converts a node's counters from the peer protocol.
func countersOf(s *peerv1.StatsResponse) *admin.Counters {
	c := &admin.Counters{Requests: s.GetRequests(), Bytes: s.GetBytes(), OriginRequests: s.GetOriginRequests(),
		PeerFetches: s.GetPeerFetches()}
	for _, t := range s.GetTiers() {
		c.Tiers = append(c.Tiers, admin.Tier{Name: t.GetName(), Objects: t.GetObjects(), Bytes: t.GetBytes(), Evictions: t.GetEvictions()})
	}
	return c
}

// Config is the node's effective configuration, without its secrets.
func (v adminView) Config() *adminv1.NodeConfig {
	c := v.n.cfg
	out := &adminv1.NodeConfig{
		Name: c.Name, Http: v.n.HTTPAddr(), Metrics: v.n.MetricsAddr(), Admin: v.n.AdminAddr(),
		AdminInsecure: c.AdminInsecure, MemoryBytes: c.MemoryBytes, MaxObjectSizeBytes: c.MaxObjectSize,
		CacheDir: c.CacheDir, DiskBytes: c.DiskBytes,
		FillTimeout: durationpb.New(c.FillTimeout), FillIdleTimeout: durationpb.New(c.FillIdleTimeout),
		HitForPass: durationpb.New(c.HitForPass), BodyTimeout: durationpb.New(c.BodyTimeout),
		ShutdownTimeout: durationpb.New(c.ShutdownTimeout), AccessLog: c.AccessLog,
		Https: v.n.HTTPSAddr(), TlsCertFile: c.TLSCertFile,
	}
	if c.ACME != nil {
		out.AcmeDirectory = c.ACME.Directory
	}
	if c.CacheDir == "" {
		out.DiskBytes = 0
	}
	if c.AdminToken != "" {
		out.AdminAuth = append(out.AdminAuth, "token")
	}
	if c.AdminClientCAFile != "" {
		out.AdminAuth = append(out.AdminAuth, "client-certificate")
	}
	for _, o := range c.Origins {
		out.DefaultOrigins = append(out.DefaultOrigins, o.String())
	}
	for _, st := range v.n.sites.Sites() {
		sc := &adminv1.SiteConfig{Name: st.Name, Hosts: st.Hosts, Rules: int32(st.Rules()), Https: st.HTTPS.String(), Hsts: st.HSTS,
			OriginProtocol: st.OriginProtocol.String(), Acme: st.ACME}
		for _, c := range st.Certificates {
			sc.Certificates = append(sc.Certificates, c.CertFile)
		}
		for _, o := range st.Origins {
			sc.Origins = append(sc.Origins, fmt.Sprintf("%s weight=%d priority=%d", o.URL, o.Weight, o.Priority))
		}
		out.Sites = append(out.Sites, sc)
	}
	for _, p := range c.PurgeAllow {
		out.PurgeAllow = append(out.PurgeAllow, p.String())
	}
	if v.n.mesh == nil {
		return out
	}
	m := v.n.mesh.Config() // with the defaults in place
	out.Mesh = &adminv1.MeshConfig{Peer: v.n.PeerAddr(), Gossip: v.n.GossipAddr(), Join: m.Join, Region: m.Region,
		GossipKeys: int32(len(m.GossipKeys)), Insecure: m.Insecure, CopyShare: m.CopyShare,
		PurgeLease: durationpb.New(m.PurgeLease), HandoffWindow: durationpb.New(m.HandoffWindow),
		JoinWave: durationpb.New(m.JoinWave), DrainOnStop: durationpb.New(m.DrainOnStop)}
	if t := m.TLS; t != (tlsconf.MeshFiles{}) {
		out.Mesh.Tls = &adminv1.MeshTLS{CaFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, CaKeyFile: t.CAKeyFile}
	}
	return out
}
