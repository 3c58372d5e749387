// Package ring maps cache keys to the node that owns them: consistent hashing
// with bounded loads (github.com/buraksezer/consistent) over an immutable
// member set. Keys hash to one of PartitionCount partitions and partitions are
// placed on members, so adding a member to N moves about 1/(N+1) of the keys and
// no member owns more than Load times the average.
//
// A Ring never changes after New: a membership change builds a new Ring, which
// callers swap in atomically. Ring knows nothing of HTTP, gRPC or gossip.
package ring

import (
	"errors"
	"fmt"
	"slices"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// ErrNoMembers is returned by New for an empty member list.
var ErrNoMembers = errors.New("ring: no members")

// Config tunes the ring. Zero fields take their defaults.
type Config struct {
	// PartitionCount is the number of partitions keys hash to; a prime spreads
	// keys evenly. Default 4093.
	PartitionCount int
	// ReplicationFactor is how many points each member has on the hash circle.
	// Default 100.
	ReplicationFactor int
	// Load bounds a member's partitions to Load × the average. Default 1.25.
	Load float64
}

func (c Config) withDefaults() Config {
	if c.PartitionCount == 0 {
		c.PartitionCount = 4093
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = 100
	}
	if c.Load == 0 {
		c.Load = 1.25
	}
	return c
}

// Validate rejects settings consistent cannot work with.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.PartitionCount < 1 {
		errs = append(errs, fmt.Errorf("ring: partition count %d must be positive", c.PartitionCount))
	}
	if c.ReplicationFactor < 1 {
		errs = append(errs, fmt.Errorf("ring: replication factor %d must be positive", c.ReplicationFactor))
	}
	if c.Load < 1 {
		errs = append(errs, fmt.Errorf("ring: load %v must be at least 1", c.Load))
	}
	return errors.Join(errs...)
}

type member string

func (m member) String() string { return string(m) }

type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// Ring is an immutable owner lookup over a member set. The zero Ring and a nil
// *Ring own nothing.
type Ring struct {
	c       *consistent.Consistent
	members []string
	parts   int
}

// New builds a ring over members (names, unique; order does not matter).
func New(members []string, cfg Config) (r *Ring, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	names := slices.Sorted(slices.Values(members))
	names = slices.Compact(names)
	if len(names) == 0 {
		return nil, ErrNoMembers
	}
	if len(names) != len(members) {
		return nil, fmt.Errorf("ring: duplicate member names in %q", members)
	}
	ms := make([]consistent.Member, len(names))
	for i, n := range names {
		if n == "" {
			return nil, errors.New("ring: empty member name")
		}
		ms[i] = member(n)
	}
	// consistent panics when the load bound leaves no room to place a partition;
	// that is a configuration error here, never a crash.
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("ring: cannot place %d partitions on %d members with load %v: %v",
				cfg.PartitionCount, len(names), cfg.Load, p)
		}
	}()
	c := consistent.New(ms, consistent.Config{Hasher: hasher{}, PartitionCount: cfg.PartitionCount,
		ReplicationFactor: cfg.ReplicationFactor, Load: cfg.Load})
	return &Ring{c: c, members: names, parts: cfg.PartitionCount}, nil
}

// Owner returns the member that owns key; false for an empty ring.
func (r *Ring) Owner(key string) (string, bool) {
	if r == nil || r.c == nil {
		return "", false
	}
	m := r.c.LocateKey([]byte(key))
	if m == nil {
		return "", false
	}
	return m.String(), true
}

// Replicas returns up to n distinct members for key, the owner first.
func (r *Ring) Replicas(key string, n int) []string {
	if r == nil || r.c == nil || n <= 0 {
		return nil
	}
	owner, _ := r.Owner(key)
	out := []string{owner}
	if n == 1 {
		return out
	}
	ms, err := r.c.GetClosestN([]byte(key), min(n, len(r.members)))
	if err != nil {
		return out
	}
	for _, m := range ms {
		if s := m.String(); s != owner && len(out) < n {
			out = append(out, s)
		}
	}
	return out
}

// Members returns the member names, sorted.
func (r *Ring) Members() []string {
	if r == nil {
		return nil
	}
	return slices.Clone(r.members)
}

// Shares returns each member's share of the partitions (they sum to 1).
func (r *Ring) Shares() map[string]float64 {
	out := map[string]float64{}
	if r == nil || r.c == nil {
		return out
	}
	for p := range r.parts {
		out[r.c.GetPartitionOwner(p).String()]++
	}
	for k, v := range out {
		out[k] = v / float64(r.parts)
	}
	return out
}
