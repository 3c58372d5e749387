package purge

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// issuedKept is how many purges issued at this node keep their receipts for
// Recent.
const issuedKept = 32

// issued keeps the receipts of the purges issued at this node, newest last.
type issued struct {
	mu  sync.Mutex
	ids []string
	by  map[string][]Receipt
}

func (i *issued) put(id string, rs []Receipt) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.by == nil {
		i.by = map[string][]Receipt{}
	}
	i.ids = append(i.ids, id)
	i.by[id] = slices.Clone(rs)
	if len(i.ids) > issuedKept {
		delete(i.by, i.ids[0])
		i.ids = i.ids[1:]
	}
}

func (i *issued) get(id string) []Receipt {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Clone(i.by[id])
}

// markLate records that member applied purge id after it was issued.
func (i *issued) markLate(id, member string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	for k := range i.by[id] {
		if r := &i.by[id][k]; r.Node == member && !r.Applied {
			r.Late, r.Error = true, ""
		}
	}
}

// Recent is a purge of the log, for an operator's eyes.
type Recent struct {
	ID     string
	Issued time.Time
	From   string // the member it was issued at
	What   string // its keys, prefixes and tags, shortened
	Soft   bool
	// Receipts are the members' answers, for a purge issued at this node.
	Receipts []Receipt
}

// Recent lists the newest n purges of the log, newest first.
func (s *Service) Recent(n int) []Recent {
	recs := s.records.All()
	var out []Recent
	for i := len(recs) - 1; i >= 0 && len(out) < n; i-- {
		p := recs[i].GetPurge()
		out = append(out, Recent{ID: p.GetId(), Issued: p.GetIssued().AsTime(), From: p.GetFrom(), Soft: p.GetSoft(),
			What: describe(p.GetKeys(), p.GetKeyPrefixes(), p.GetTags()), Receipts: s.issued.get(p.GetId())})
	}
	return out
}

// CheckLate asks the members whose receipt for purge id (issued here) was
// missing whether they have applied it since, and marks those that have.
func (s *Service) CheckLate(ctx context.Context, id string) {
	missing := map[string]bool{}
	for _, r := range s.issued.get(id) {
		if !r.Applied && !r.Late {
			missing[r.Node] = true
		}
	}
	var wg sync.WaitGroup
	for _, m := range s.members() {
		if !missing[m.Name] {
			continue
		}
		wg.Go(func() {
			if s.statusAt(ctx, m, id).Applied {
				s.issued.markLate(id, m.Name)
			}
		})
	}
	wg.Wait()
}

// describe shortens what a purge names to a line.
func describe(keys, prefixes, tags []string) string {
	var parts []string
	add := func(kind string, vs []string) {
		switch len(vs) {
		case 0:
		case 1:
			parts = append(parts, kind+" "+vs[0])
		default:
			parts = append(parts, fmt.Sprintf("%s %s and %d more", kind, vs[0], len(vs)-1))
		}
	}
	add("key", keys)
	add("prefix", prefixes)
	add("tag", tags)
	line := strings.Join(parts, "; ")
	if len(line) > 200 {
		line = line[:197] + "..."
	}
	return line
}
