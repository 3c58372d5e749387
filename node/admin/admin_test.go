package admin

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meshcdn/meshcdn/proto/meshcdn/admin/v1"
)

// cluster answers as a node would, with fixed data: the admin service is
// tested here on its own, the node's answers in package node.
type cluster struct {
	stats   []NodeStats
	applied bool
}

func (c *cluster) Name() string { return "n1" }
func (c *cluster) Members() []MemberInfo {
	return []MemberInfo{{Name: "n1", State: "alive", OwnedShare: 0.5, Self: true}, {Name: "n2", State: "draining"}}
}
func (c *cluster) Failed() []MemberInfo { return []MemberInfo{{Name: "n3", State: "failed"}} }
func (c *cluster) Locate(url string, _, _ int) (Location, error) {
	if !strings.HasPrefix(url, "http://www.example.test/") {
		return Location{}, fmt.Errorf("%w: no site is configured for %q", ErrBadURL, url)
	}
	return Location{Site: "www", Key: "www.example.test/a", Owner: "n2"}, nil
}
func (c *cluster) Config() *adminv1.NodeConfig { return &adminv1.NodeConfig{Name: "n1"} }
func (c *cluster) Purge(context.Context, []string, []string, []string, bool) (string, []Receipt, error) {
	return "0123456789abcdef", []Receipt{{Node: "n1", Applied: true, Removed: 2}}, nil
}
func (c *cluster) PurgeStatus(context.Context, string) []Receipt {
	return []Receipt{{Node: "n1", Applied: c.applied}, {Node: "n2", Error: "not in its purge log"}}
}
func (c *cluster) Stats(context.Context) []NodeStats { return c.stats }
func (c *cluster) Drain(_ context.Context, node string, _ bool) (Drained, error) {
	if node != "n2" {
		return Drained{}, fmt.Errorf("%w: %q", ErrNoMember, node)
	}
	return Drained{Node: node, Taken: 4}, nil
}
func (c *cluster) Prefetch(_ context.Context, urls []string, report func(Progress) error) error {
	for _, u := range urls {
		if err := report(Progress{URL: u, Node: "n2", Status: 200}); err != nil {
			return err
		}
	}
	return nil
}
func (c *cluster) Explain(string, string, map[string]string) (Explanation, error) {
	return Explanation{Outcome: "miss"}, nil
}

// start serves the admin service over c on loopback, with token required
// when set, and returns a client.
func start(t *testing.T, c Cluster, token string) (adminv1.AdminServiceClient, healthpb.HealthClient) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if token != "" {
		unary, stream := Auth(token)
		opts = append(opts, grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
	}
	s := grpc.NewServer(opts...)
	adminv1.RegisterAdminServiceServer(s, NewServer(c))
	healthpb.RegisterHealthServer(s, health.NewServer())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		s.Stop()
		<-done
	})
	return adminv1.NewAdminServiceClient(conn), healthpb.NewHealthClient(conn)
}

// Every call but health checks needs the bearer token.
func TestAuth(t *testing.T) {
	ac, hc := start(t, &cluster{}, "s3cret")
	ctx := t.Context()
	for _, md := range []metadata.MD{nil, metadata.Pairs("authorization", "Bearer wrong"), metadata.Pairs("authorization", "s3cret")} {
		_, err := ac.ListMembers(metadata.NewOutgoingContext(ctx, md), &adminv1.ListMembersRequest{})
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "Bearer") {
			t.Errorf("metadata %v: %v; want Unauthenticated naming the scheme", md, err)
		}
	}
	stream, err := ac.Prefetch(ctx, &adminv1.PrefetchRequest{Urls: []string{"http://www.example.test/a"}})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("streaming call without a token: %v", err)
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health check without a token: %v", err)
	}
	r, err := ac.ListMembers(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret"), &adminv1.ListMembersRequest{})
	if err != nil || len(r.GetMembers()) != 3 || r.GetMembers()[2].GetState() != "failed" {
		t.Errorf("with the token: %v %v; want the live members, then the failed one", r, err)
	}
}

// Bad arguments are InvalidArgument with a message naming the field; what
// the node cannot find is NotFound.
func TestArguments(t *testing.T) {
	c := &cluster{}
	ac, _ := start(t, c, "")
	ctx := t.Context()
	long := "http://www.example.test/" + strings.Repeat("a", MaxPurgeItem)
	many := make([]string, MaxPurge+1)
	for i := range many {
		many[i] = fmt.Sprintf("http://www.example.test/%d", i)
	}
	prefetch := func(urls ...string) error {
		stream, err := ac.Prefetch(ctx, &adminv1.PrefetchRequest{Urls: urls})
		if err == nil {
			_, err = stream.Recv()
		}
		return err
	}
	for _, tc := range []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"locate without url", call(ac.Locate(ctx, &adminv1.LocateRequest{})), codes.InvalidArgument, "url: required"},
		{"locate replicas", call(ac.Locate(ctx, &adminv1.LocateRequest{Url: "http://www.example.test/a", Replicas: 65})), codes.InvalidArgument, "replicas: 65"},
		{"locate slices", call(ac.Locate(ctx, &adminv1.LocateRequest{Url: "http://www.example.test/a", Slices: -2})), codes.InvalidArgument, "slices: -2 is not -1 (all)"},
		{"locate unknown host", call(ac.Locate(ctx, &adminv1.LocateRequest{Url: "http://other.test/a"})), codes.InvalidArgument, "no site is configured"},
		{"purge nothing", call(ac.Purge(ctx, &adminv1.PurgeRequest{})), codes.InvalidArgument, "at least one is required"},
		{"purge too many", call(ac.Purge(ctx, &adminv1.PurgeRequest{Urls: many})), codes.InvalidArgument, "at most 1000 per call"},
		{"purge item too long", call(ac.Purge(ctx, &adminv1.PurgeRequest{Urls: []string{long}})), codes.InvalidArgument, "urls[0]"},
		{"purge bad tag", call(ac.Purge(ctx, &adminv1.PurgeRequest{Tags: []string{"a b"}})), codes.InvalidArgument, "tags[0]"},
		{"purge id", call(ac.GetPurge(ctx, &adminv1.GetPurgeRequest{PurgeId: "xyz"})), codes.InvalidArgument, "purge_id"},
		{"purge unknown", call(ac.GetPurge(ctx, &adminv1.GetPurgeRequest{PurgeId: "0123456789abcdef"})), codes.NotFound, "no member knows"},
		{"prefetch nothing", prefetch(), codes.InvalidArgument, "urls: at least one"},
		{"prefetch relative", prefetch("/a.css"), codes.InvalidArgument, "urls[0]"},
		{"explain method", call(ac.Explain(ctx, &adminv1.ExplainRequest{Url: "http://www.example.test/a", Method: "G T"})), codes.InvalidArgument, "method"},
		{"drain unknown", call(ac.Drain(ctx, &adminv1.DrainRequest{Node: "n9"})), codes.InvalidArgument, "no such member"},
	} {
		if status.Code(tc.err) != tc.code || !strings.Contains(status.Convert(tc.err).Message(), tc.msg) {
			t.Errorf("%s: %v; want %v with %q", tc.name, tc.err, tc.code, tc.msg)
		}
	}
	c.applied = true
	r, err := ac.GetPurge(ctx, &adminv1.GetPurgeRequest{PurgeId: "0123456789abcdef"})
	if err != nil || len(r.GetNodes()) != 2 || !r.GetNodes()[0].GetApplied() {
		t.Errorf("a known purge: %v %v", r, err)
	}
}

func call[T any](_ T, err error) error { return err }

// GetStats adds the members' counters up, tier by tier in the order they
// first appear, names the members that did not answer, and computes the hit
// ratios from requests and bytes.
func TestGetStats(t *testing.T) {
	c := &cluster{stats: []NodeStats{
		{Node: "n1", Stats: &Counters{Requests: map[string]int64{"hit": 3, "miss": 1}, Bytes: map[string]int64{"hit": 300, "miss": 100},
			OriginRequests: 1, Tiers: []Tier{{Name: "memory", Objects: 2, Bytes: 400}, {Name: "disk", Objects: 1}}}},
		{Node: "n2", Error: "no answer"},
		{Node: "n3", Stats: &Counters{Requests: map[string]int64{"hit": 1, "served-stale": 1, "miss": 2}, Bytes: map[string]int64{"revalidated": 100, "miss": 300},
			OriginRequests: 2, PeerFetches: 5, Tiers: []Tier{{Name: "copies", Objects: 1}, {Name: "memory", Objects: 1, Evictions: 4}}}},
	}}
	ac, _ := start(t, c, "")
	r, err := ac.GetStats(t.Context(), &adminv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetNodes()) != 3 || r.GetNodes()[1].GetError() != "no answer" {
		t.Fatalf("nodes: %v", r.GetNodes())
	}
	total := r.GetCluster()
	if total.GetOriginRequests() != 3 || total.GetPeerFetches() != 5 || total.GetRequests()["hit"] != 4 || total.GetBytesServed() != 800 {
		t.Errorf("cluster totals: %v", total)
	}
	if total.GetRequestHitRatio() != 5.0/8 || total.GetByteHitRatio() != 400.0/800 {
		t.Errorf("hit ratios %v %v; want 5/8 of requests, 400/800 of bytes", total.GetRequestHitRatio(), total.GetByteHitRatio())
	}
	var tiers []string
	for _, tr := range total.GetTiers() {
		tiers = append(tiers, fmt.Sprintf("%s:%d/%d", tr.GetTier(), tr.GetObjects(), tr.GetEvictions()))
	}
	if got := strings.Join(tiers, " "); got != "memory:3/4 disk:1/0 copies:1/0" {
		t.Errorf("tiers %q", got)
	}
}
