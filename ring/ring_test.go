package ring

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"testing"
)

func mustNew(t *testing.T, members ...string) *Ring {
	t.Helper()
	r, err := New(members, Config{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func owner(t *testing.T, r *Ring, key string) string {
	t.Helper()
	o, ok := r.Owner(key)
	if !ok {
		t.Fatalf("no owner for %q", key)
	}
	return o
}

func TestOwnerIgnoresJoinOrder(t *testing.T) {
	a := mustNew(t, "n1", "n2", "n3")
	b := mustNew(t, "n3", "n1", "n2")
	for i := range 5000 {
		k := "example.com/obj/" + strconv.Itoa(i)
		if x, y := owner(t, a, k), owner(t, b, k); x != y {
			t.Fatalf("Owner(%q): %s vs %s", k, x, y)
		}
	}
}

// TestBalance: no member owns more than Load × the average of partitions, and
// keys spread accordingly.
func TestBalance(t *testing.T) {
	for _, n := range []int{2, 3, 5, 8} {
		var names []string
		for i := range n {
			names = append(names, fmt.Sprintf("node-%d", i))
		}
		r := mustNew(t, names...)
		limit := math.Ceil(1.0/float64(n)*1.25*4093) / 4093
		sum := 0.0
		for m, share := range r.Shares() {
			sum += share
			if share > limit+1e-9 {
				t.Errorf("%d members: %s owns %.3f of partitions, bound %.3f", n, m, share, limit)
			}
		}
		if math.Abs(sum-1) > 1e-9 {
			t.Errorf("shares sum to %v", sum)
		}
	}
}

// TestMovementOnJoin: a fourth member moves about a quarter of the keys. (With
// bounded loads a few partitions also shift between old members to keep
// every member under its bound; they count as moved.)
func TestMovementOnJoin(t *testing.T) {
	before := mustNew(t, "n1", "n2", "n3")
	after := mustNew(t, "n1", "n2", "n3", "n4")
	const keys = 20000
	moved := 0
	for i := range keys {
		k := "h/" + strconv.Itoa(i)
		x, y := owner(t, before, k), owner(t, after, k)
		if x != y {
			moved++
		}
	}
	share := float64(moved) / keys
	t.Logf("%.3f of keys changed owner", share)
	if share < 0.25*0.7 || share > 0.25*1.3 {
		t.Errorf("%.3f of keys moved, want 1/4 ± 30%%", share)
	}
}

func TestEmptyAndNil(t *testing.T) {
	var r *Ring
	if _, ok := r.Owner("k"); ok {
		t.Error("nil ring has an owner")
	}
	if _, err := New(nil, Config{}); !errors.Is(err, ErrNoMembers) {
		t.Errorf("New(nil) = %v", err)
	}
	if _, err := New([]string{"a", "a"}, Config{}); err == nil {
		t.Error("duplicate members accepted")
	}
	if err := (Config{Load: 0.5}).Validate(); err == nil {
		t.Error("load below 1 accepted")
	}
}

func TestReplicas(t *testing.T) {
	r := mustNew(t, "a", "b", "c")
	for i := range 200 {
		k := strconv.Itoa(i)
		rs := r.Replicas(k, 3)
		if len(rs) != 3 || rs[0] != owner(t, r, k) || rs[1] == rs[0] || rs[2] == rs[1] || rs[2] == rs[0] {
			t.Fatalf("Replicas(%q) = %v", k, rs)
		}
	}
	if rs := r.Replicas("k", 5); len(rs) != 3 {
		t.Errorf("more replicas than members: %v", rs)
	}
}

// TestNeverPanics: settings consistent cannot place give an error, not a crash.
func TestNeverPanics(t *testing.T) {
	for _, cfg := range []Config{{PartitionCount: 1, Load: 1}, {PartitionCount: 7, ReplicationFactor: 1, Load: 1}} {
		for n := 1; n <= 9; n++ {
			var names []string
			for i := range n {
				names = append(names, strconv.Itoa(i))
			}
			if r, err := New(names, cfg); err == nil {
				_, _ = r.Owner("x")
			}
		}
	}
}

func BenchmarkOwner(b *testing.B) {
	r, _ := New([]string{"n1", "n2", "n3", "n4", "n5"}, Config{})
	for b.Loop() {
		_, _ = r.Owner("www.example.com/static/app.3f9a1c.js")
	}
}

func BenchmarkNew(b *testing.B) {
	names := []string{"n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8"}
	for b.Loop() {
		_, _ = New(names, Config{})
	}
}
