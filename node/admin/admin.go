// Package admin is the operators' gRPC AdminService. It sees the node only
// through the small Cluster interface it declares, and adds bearer-token
// authentication for listeners exposed beyond loopback.
package admin

import (
	"context"
	"crypto/subtle"
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/meshcdn/meshcdn/proto/meshcdn/admin/v1"
)

// MemberInfo describes one member of the cluster.
type MemberInfo struct {
	Name, State, Region, HTTPAddr, PeerAddr, GossipAddr, AdminAddr, Version string
	OwnedShare                                                              float64
	Self, Ready                                                             bool
	Load                                                                    int
	// Role is "edge", or "router" for a member that sends users to edges
	// and owns nothing.
	Role string
}

// Location is where a URL's object lives: for an object stored as slices,
// each slice asked for too.
type Location struct {
	Site, Key, Owner    string
	Region, ShieldOwner string
	Replicas            []string
	Epoch               uint64
	// SliceSize is the site's slice_size (0: whole objects); ObjectSize
	// the object's length, when the node holds its first slice.
	SliceSize, ObjectSize int64
	Slices                []SliceOwner
}

// SliceOwner is where one slice of an object lives.
type SliceOwner struct {
	Index              int64
	Key, Owner, Shield string
}

// MaxSlices bounds the slices one Locate lists.
const MaxSlices = 10000

// ErrBadURL is wrapped by Cluster.Locate for a URL it cannot place.
var ErrBadURL = errors.New("bad url")

// Drained is what a drain came to: the member, and with wait, how the offers
// of its objects to their new owners went.
type Drained struct {
	Node            string
	Taken, NotTaken int64
	Took            time.Duration
}

// ErrNoMember is wrapped by Cluster.Drain for a name no member has.
var ErrNoMember = errors.New("no such member")

// ErrNotEdge is wrapped by Cluster.Drain for a member that is not an edge
// (a router, which owns nothing).
var ErrNotEdge = errors.New("not an edge")

// Cluster is what the admin service needs from the node.
type Cluster interface {
	// Name is the answering node's name.
	Name() string
	// Members lists the live members.
	Members() []MemberInfo
	// Failed lists the members that went away without leaving recently.
	Failed() []MemberInfo
	// Locate places an absolute URL, and the first slices of its object
	// (-1: all of them, when the length is known); errors wrap ErrBadURL
	// when the URL is at fault.
	Locate(url string, replicas, slices int) (Location, error)
	// Config is the effective configuration, without secrets.
	Config() *adminv1.NodeConfig
	// Purge applies a purge on every member; errors wrap ErrBadURL when a
	// URL or prefix is at fault.
	Purge(ctx context.Context, urls, prefixes, tags []string, soft bool) (id string, receipts []Receipt, err error)
	// PurgeStatus returns a receipt per member for an earlier purge.
	PurgeStatus(ctx context.Context, id string) []Receipt
	// Stats gathers every member's counters.
	Stats(ctx context.Context) []NodeStats
	// Drain takes the named member (empty: this node) out of the ring; with
	// wait, it returns once that member has offered its hottest objects to
	// their new owners, with how that went.
	Drain(ctx context.Context, node string, wait bool) (Drained, error)
	// Prefetch fills each URL at its owner, calling report as each completes
	// (from one goroutine at a time).
	Prefetch(ctx context.Context, urls []string, report func(Progress) error) error
	// Explain reasons about a request; errors wrap ErrBadURL when the URL is
	// at fault.
	Explain(url, method string, header map[string]string) (Explanation, error)
}

// NodeStats is one member's counters, or why it did not answer.
type NodeStats struct {
	Node  string
	Stats *Counters // nil when the member did not answer
	Error string
}

// Counters are a node's totals since it started.
type Counters struct {
	// Requests and Bytes (of response bodies) by cache status label.
	Requests, Bytes             map[string]int64
	OriginRequests, PeerFetches int64
	Tiers                       []Tier
}

// Tier is what one store tier holds.
type Tier struct {
	Name                      string
	Objects, Bytes, Evictions int64
}

// Explanation is what a node would do with a request.
type Explanation struct {
	Site, Rule, Action, Key, Owner string
	Stored                         bool
	Tier                           string
	AgeSeconds, TTLSeconds         int64
	TTLSource, Outcome             string
	StoreConditions                []string
	AccessRules                    []string
	Access                         string
	// SliceSize, ObjectSize and SlicesHere describe an object stored as
	// slices (see ExplainResponse).
	SliceSize, ObjectSize, SlicesHere int64
}

// Progress reports one prefetched URL.
type Progress struct {
	URL, Node, CacheStatus, Error string
	Status                        int
	Bytes                         int64
}

// Receipt is one node's answer to a purge.
type Receipt struct {
	Node    string
	Applied bool
	Removed int64
	Error   string
}

// Server implements adminv1.AdminServiceServer.
type Server struct {
	adminv1.UnimplementedAdminServiceServer
	c Cluster
}

var _ adminv1.AdminServiceServer = (*Server)(nil)

// NewServer returns the admin service over c.
func NewServer(c Cluster) *Server { return &Server{c: c} }

// ListMembers implements adminv1.AdminServiceServer.
func (s *Server) ListMembers(context.Context, *adminv1.ListMembersRequest) (*adminv1.ListMembersResponse, error) {
	resp := &adminv1.ListMembersResponse{}
	for _, m := range append(s.c.Members(), s.c.Failed()...) {
		resp.Members = append(resp.Members, &adminv1.Member{Name: m.Name, State: m.State, Region: m.Region,
			HttpAddr: m.HTTPAddr, PeerAddr: m.PeerAddr, GossipAddr: m.GossipAddr, AdminAddr: m.AdminAddr,
			Version: m.Version, OwnedShare: m.OwnedShare, Self: m.Self, Ready: m.Ready, Load: int32(m.Load), Role: m.Role})
	}
	return resp, nil
}

// Locate implements adminv1.AdminServiceServer.
func (s *Server) Locate(_ context.Context, req *adminv1.LocateRequest) (*adminv1.LocateResponse, error) {
	if req.GetUrl() == "" {
		return nil, status.Error(codes.InvalidArgument, "url: required, e.g. http://www.example.com/a.png")
	}
	if req.GetReplicas() < 0 || req.GetReplicas() > 64 {
		return nil, status.Errorf(codes.InvalidArgument, "replicas: %d is not between 0 and 64", req.GetReplicas())
	}
	if req.GetSlices() < -1 || req.GetSlices() > MaxSlices {
		return nil, status.Errorf(codes.InvalidArgument, "slices: %d is not -1 (all) or between 0 and %d", req.GetSlices(), MaxSlices)
	}
	loc, err := s.c.Locate(req.GetUrl(), int(req.GetReplicas()), int(req.GetSlices()))
	if errors.Is(err, ErrBadURL) {
		return nil, status.Errorf(codes.InvalidArgument, "url: %v", err)
	}
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	resp := &adminv1.LocateResponse{Site: loc.Site, Key: loc.Key, Owner: loc.Owner, Replicas: loc.Replicas, Epoch: loc.Epoch,
		Region: loc.Region, ShieldOwner: loc.ShieldOwner, SliceSize: loc.SliceSize, ObjectSize: loc.ObjectSize}
	for _, s := range loc.Slices {
		resp.Slices = append(resp.Slices, &adminv1.SliceOwner{Index: s.Index, Key: s.Key, Owner: s.Owner, ShieldOwner: s.Shield})
	}
	return resp, nil
}

// GetPurge implements adminv1.AdminServiceServer.
func (s *Server) GetPurge(ctx context.Context, req *adminv1.GetPurgeRequest) (*adminv1.GetPurgeResponse, error) {
	id := req.GetPurgeId()
	if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
		return nil, status.Errorf(codes.InvalidArgument, "purge_id: %q is not a purge id (16 hex digits, as Purge answers)", id)
	}
	resp := &adminv1.GetPurgeResponse{PurgeId: id}
	known := false
	for _, r := range s.c.PurgeStatus(ctx, id) {
		known = known || r.Applied
		resp.Nodes = append(resp.Nodes, &adminv1.PurgeReceipt{Node: r.Node, Applied: r.Applied, Error: r.Error})
	}
	if !known {
		return nil, status.Errorf(codes.NotFound, "purge_id: no member knows purge %s (unknown, or older than the purge logs keep)", id)
	}
	return resp, nil
}

// Purge implements adminv1.AdminServiceServer.
func (s *Server) Purge(ctx context.Context, req *adminv1.PurgeRequest) (*adminv1.PurgeResponse, error) {
	switch n := len(req.GetUrls()) + len(req.GetPrefixes()) + len(req.GetTags()); {
	case n == 0:
		return nil, status.Error(codes.InvalidArgument, "urls, prefixes or tags: at least one is required")
	case n > MaxPurge:
		return nil, status.Errorf(codes.InvalidArgument, "urls, prefixes and tags: %d items, at most %d per call", n, MaxPurge)
	}
	for _, f := range []struct {
		name  string
		items []string
	}{{"urls", req.GetUrls()}, {"prefixes", req.GetPrefixes()}, {"tags", req.GetTags()}} {
		for i, s := range f.items {
			if len(s) > MaxPurgeItem {
				return nil, status.Errorf(codes.InvalidArgument, "%s[%d]: %d bytes, at most %d", f.name, i, len(s), MaxPurgeItem)
			}
		}
	}
	for i, t := range req.GetTags() {
		if t == "" || strings.ContainsAny(t, " ,") {
			return nil, status.Errorf(codes.InvalidArgument, "tags[%d]: %q is not a tag (no spaces or commas)", i, t)
		}
	}
	id, receipts, err := s.c.Purge(ctx, req.GetUrls(), req.GetPrefixes(), req.GetTags(), req.GetSoft())
	if errors.Is(err, ErrBadURL) {
		return nil, status.Error(codes.InvalidArgument, strings.TrimPrefix(err.Error(), ErrBadURL.Error()+": "))
	}
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	resp := &adminv1.PurgeResponse{PurgeId: id}
	for _, r := range receipts {
		resp.Nodes = append(resp.Nodes, &adminv1.PurgeReceipt{Node: r.Node, Applied: r.Applied, Removed: r.Removed, Error: r.Error})
	}
	return resp, nil
}

// MaxPurge bounds the URLs, prefixes and tags of one Purge call, and
// MaxPurgeItem the length of each: purges are kept in every node's log.
const (
	MaxPurge     = 1000
	MaxPurgeItem = 2048
)

// MaxPrefetch bounds the URLs of one Prefetch call.
const MaxPrefetch = 1000

// Prefetch implements adminv1.AdminServiceServer.
func (s *Server) Prefetch(req *adminv1.PrefetchRequest, stream grpc.ServerStreamingServer[adminv1.PrefetchResponse]) error {
	switch n := len(req.GetUrls()); {
	case n == 0:
		return status.Error(codes.InvalidArgument, "urls: at least one is required")
	case n > MaxPrefetch:
		return status.Errorf(codes.InvalidArgument, "urls: %d URLs, at most %d per call", n, MaxPrefetch)
	}
	for i, u := range req.GetUrls() {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return status.Errorf(codes.InvalidArgument, "urls[%d]: %q is not an absolute http(s) URL", i, u)
		}
	}
	return s.c.Prefetch(stream.Context(), req.GetUrls(), func(p Progress) error {
		return stream.Send(&adminv1.PrefetchResponse{Url: p.URL, Node: p.Node, Status: int32(p.Status), Bytes: p.Bytes,
			CacheStatus: p.CacheStatus, Error: p.Error})
	})
}

// Explain implements adminv1.AdminServiceServer.
func (s *Server) Explain(_ context.Context, req *adminv1.ExplainRequest) (*adminv1.ExplainResponse, error) {
	if req.GetUrl() == "" {
		return nil, status.Error(codes.InvalidArgument, "url: required, e.g. http://www.example.com/a.png")
	}
	method := strings.ToUpper(req.GetMethod())
	if method == "" {
		method = "GET"
	}
	for _, c := range method {
		if c < 'A' || c > 'Z' {
			return nil, status.Errorf(codes.InvalidArgument, "method: %q is not an HTTP method", req.GetMethod())
		}
	}
	e, err := s.c.Explain(req.GetUrl(), method, req.GetHeaders())
	if errors.Is(err, ErrBadURL) {
		return nil, status.Errorf(codes.InvalidArgument, "url: %v", err)
	}
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &adminv1.ExplainResponse{Site: e.Site, Rule: e.Rule, Action: e.Action, Key: e.Key, Owner: e.Owner,
		Stored: e.Stored, Tier: e.Tier, AgeSeconds: e.AgeSeconds, TtlSeconds: e.TTLSeconds, TtlSource: e.TTLSource,
		Outcome: e.Outcome, StoreConditions: e.StoreConditions, AccessRules: e.AccessRules, Access: e.Access,
		SliceSize: e.SliceSize, ObjectSize: e.ObjectSize, SlicesHere: e.SlicesHere}, nil
}

// GetStats implements adminv1.AdminServiceServer.
func (s *Server) GetStats(ctx context.Context, _ *adminv1.GetStatsRequest) (*adminv1.GetStatsResponse, error) {
	resp := &adminv1.GetStatsResponse{}
	total := &Counters{Requests: map[string]int64{}, Bytes: map[string]int64{}}
	for _, ns := range s.c.Stats(ctx) {
		if ns.Stats == nil {
			resp.Nodes = append(resp.Nodes, &adminv1.NodeStats{Node: ns.Node, Error: ns.Error})
			continue
		}
		resp.Nodes = append(resp.Nodes, nodeStats(ns.Node, ns.Stats))
		total.add(ns.Stats)
	}
	resp.Cluster = nodeStats("cluster", total)
	return resp, nil
}

// add sums c into t; tiers keep the order they first appear in.
func (t *Counters) add(c *Counters) {
	for k, v := range c.Requests {
		t.Requests[k] += v
	}
	for k, v := range c.Bytes {
		t.Bytes[k] += v
	}
	t.OriginRequests += c.OriginRequests
	t.PeerFetches += c.PeerFetches
	for _, ct := range c.Tiers {
		i := slices.IndexFunc(t.Tiers, func(x Tier) bool { return x.Name == ct.Name })
		if i < 0 {
			t.Tiers = append(t.Tiers, Tier{Name: ct.Name})
			i = len(t.Tiers) - 1
		}
		t.Tiers[i].Objects += ct.Objects
		t.Tiers[i].Bytes += ct.Bytes
		t.Tiers[i].Evictions += ct.Evictions
	}
}

// nodeStats converts a node's counters, computing the hit ratios.
func nodeStats(name string, s *Counters) *adminv1.NodeStats {
	out := &adminv1.NodeStats{Node: name, Requests: s.Requests, OriginRequests: s.OriginRequests,
		PeerFetches: s.PeerFetches}
	var reqs, hitReqs, bytes, hitBytes int64
	for k, v := range s.Requests {
		reqs += v
		if k == "hit" || k == "served-stale" {
			hitReqs += v
		}
	}
	for k, v := range s.Bytes {
		bytes += v
		if k == "hit" || k == "served-stale" || k == "revalidated" {
			hitBytes += v
		}
	}
	out.BytesServed = bytes
	if reqs > 0 {
		out.RequestHitRatio = float64(hitReqs) / float64(reqs)
	}
	if bytes > 0 {
		out.ByteHitRatio = float64(hitBytes) / float64(bytes)
	}
	for _, t := range s.Tiers {
		out.Tiers = append(out.Tiers, &adminv1.TierStats{Tier: t.Name, Objects: t.Objects, Bytes: t.Bytes, Evictions: t.Evictions})
	}
	return out
}

// Drain implements adminv1.AdminServiceServer.
func (s *Server) Drain(ctx context.Context, req *adminv1.DrainRequest) (*adminv1.DrainResponse, error) {
	d, err := s.c.Drain(ctx, req.GetNode(), req.GetWait())
	if errors.Is(err, ErrNoMember) || errors.Is(err, ErrNotEdge) {
		return nil, status.Errorf(codes.InvalidArgument, "node: %v", err)
	}
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	resp := &adminv1.DrainResponse{Node: d.Node}
	if req.GetWait() {
		resp.HandedOff, resp.NotTaken, resp.Took = d.Taken, d.NotTaken, durationpb.New(d.Took)
	}
	return resp, nil
}

// GetConfig implements adminv1.AdminServiceServer.
func (s *Server) GetConfig(context.Context, *adminv1.GetConfigRequest) (*adminv1.GetConfigResponse, error) {
	return &adminv1.GetConfigResponse{Node: s.c.Name(), Config: s.c.Config()}, nil
}

// healthService is exempt from authentication, so probes need no token.
const healthService = "/grpc.health.v1.Health/"

// Auth returns interceptors that require "authorization: Bearer <token>" on
// every call but health checks.
func Auth(token string) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	check := func(ctx context.Context, method string) error {
		if strings.HasPrefix(method, healthService) {
			return nil
		}
		md, _ := metadata.FromIncomingContext(ctx)
		for _, v := range md.Get("authorization") {
			if got, ok := strings.CutPrefix(v, "Bearer "); ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1 {
				return nil
			}
		}
		return status.Error(codes.Unauthenticated, "admin: missing or wrong bearer token (authorization: Bearer <token>)")
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if err := check(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return h(srv, ss)
	}
	return unary, stream
}
