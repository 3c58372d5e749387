// Package sitedoc keeps the cluster's versioned site document: the sites
// every node serves when the mesh shares them (mesh.sites: shared), each
// change a new version with who made it and what it changed, and the
// versions before it for a rollback. A Store persists it in a node's state
// directory, replacing the file whole, so a crash leaves one version or
// the next, never a mix.
package sitedoc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshcdn/meshcdn/node/site"
)

// Doc is one version of the cluster's sites.
type Doc struct {
	Version uint64        `yaml:"version"`
	Sites   []site.Config `yaml:"sites"`
}

// Change is one entry of the history: the version it made, when, who made
// it (an admin token's or certificate's name) and what it changed.
type Change struct {
	Version uint64    `yaml:"version"`
	Time    time.Time `yaml:"time"`
	Who     string    `yaml:"who"`
	What    string    `yaml:"what"`
}

// Errors a change is refused with; they wrap the detail.
var (
	ErrNoSite    = errors.New("no such site")
	ErrNoVersion = errors.New("no such version")
	ErrInvalid   = errors.New("invalid site")
)

// Keep is how many versions a store keeps for rollbacks.
const Keep = 100

// fileName is the store's file in its directory.
const fileName = "sites.yaml"

// state is what a store keeps on disk.
type state struct {
	Versions []Doc    `yaml:"versions"` // oldest first; the last is the current one
	History  []Change `yaml:"history"`  // oldest first
}

// Store is a node's copy of the document. Its methods are safe for
// concurrent use.
type Store struct {
	path  string
	check func([]site.Config) error
	now   func() time.Time

	mu sync.Mutex
	st state
}

// Open reads the store kept in dir, or starts an empty one (version 0, no
// sites). check validates a whole set of sites beyond each one's own
// compilation (hosts bound twice, say); nil checks nothing more.
func Open(dir string, check func([]site.Config) error) (*Store, error) {
	s := &Store{path: filepath.Join(dir, fileName), check: check, now: time.Now}
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("sitedoc: %w", err)
	}
	if err := yaml.Unmarshal(b, &s.st); err != nil {
		return nil, fmt.Errorf("sitedoc: %s: %w", s.path, err)
	}
	for i := 1; i < len(s.st.Versions); i++ {
		if s.st.Versions[i].Version <= s.st.Versions[i-1].Version {
			return nil, fmt.Errorf("sitedoc: %s: version %d follows %d", s.path, s.st.Versions[i].Version, s.st.Versions[i-1].Version)
		}
	}
	if cur := s.current(); cur.Version > 0 {
		if err := s.validate(cur.Sites); err != nil {
			return nil, fmt.Errorf("sitedoc: %s: version %d: %w", s.path, cur.Version, err)
		}
	}
	return s, nil
}

// Current is the version in force, a copy the caller may change.
func (s *Store) Current() Doc {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.current()
	d.Sites = deepCopy(d.Sites)
	return d
}

func (s *Store) current() Doc {
	if len(s.st.Versions) == 0 {
		return Doc{}
	}
	return s.st.Versions[len(s.st.Versions)-1]
}

// History is every change kept, oldest first.
func (s *Store) History() []Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.st.History)
}

// Seed makes version 1 of sites when the store has none yet (the file's
// sites, when a cluster first shares them), and reports whether it did.
func (s *Store) Seed(sites []site.Config, who string) (Doc, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.current(); cur.Version > 0 {
		return cur, false, nil
	}
	d, err := s.commit(deepCopy(sites), who, fmt.Sprintf("seeded with %d sites", len(sites)))
	return d, err == nil, err
}

// Put creates or replaces the site of c's name (its first host when it
// has none), validated in full, and returns the new version.
func (s *Store) Put(c site.Config, who string) (Doc, error) {
	name := NameOf(c)
	if name == "" {
		return Doc{}, fmt.Errorf("%w: hosts: a site needs at least one host", ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sites := slices.Clone(s.current().Sites)
	what := "added " + name
	if i := slices.IndexFunc(sites, func(o site.Config) bool { return NameOf(o) == name }); i >= 0 {
		changed := changedFields(sites[i], c)
		if len(changed) == 0 {
			d := s.current() // nothing to change: no new version
			d.Sites = deepCopy(d.Sites)
			return d, nil
		}
		what = "changed " + name + ": " + strings.Join(changed, ", ")
		sites[i] = deepCopy([]site.Config{c})[0]
	} else {
		sites = append(sites, deepCopy([]site.Config{c})[0])
	}
	return s.commit(sites, who, what)
}

// Remove deletes the site name and returns the new version.
func (s *Store) Remove(name, who string) (Doc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sites := slices.Clone(s.current().Sites)
	i := slices.IndexFunc(sites, func(o site.Config) bool { return NameOf(o) == name })
	if i < 0 {
		return Doc{}, fmt.Errorf("%w: %q", ErrNoSite, name)
	}
	return s.commit(slices.Delete(sites, i, i+1), who, "removed "+name)
}

// Rollback makes a new version whose sites are those of version v.
func (s *Store) Rollback(v uint64, who string) (Doc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.st.Versions, func(d Doc) bool { return d.Version == v })
	if i < 0 {
		return Doc{}, fmt.Errorf("%w: %d (kept: %s)", ErrNoVersion, v, s.kept())
	}
	return s.commit(slices.Clone(s.st.Versions[i].Sites), who, fmt.Sprintf("rolled back to version %d", v))
}

// Export is what a peer needs to catch up with this store: the versions
// kept, oldest first, and the history. The caller may change them.
func (s *Store) Export() (versions []Doc, history []Change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.st.Versions {
		versions = append(versions, Doc{Version: d.Version, Sites: deepCopy(d.Sites)})
	}
	return versions, slices.Clone(s.st.History)
}

// Adopt takes what a peer exported when its current version is past this
// store's, and reports whether it did. The peer's current sites are
// validated first: a version this node cannot apply is refused with why,
// and the store keeps the one it has.
func (s *Store) Adopt(versions []Doc, history []Change) (Doc, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.current()
	if len(versions) == 0 || versions[len(versions)-1].Version <= cur.Version {
		return cur, false, nil
	}
	for i := 1; i < len(versions); i++ {
		if versions[i].Version <= versions[i-1].Version {
			return cur, false, fmt.Errorf("sitedoc: the peer's version %d follows %d", versions[i].Version, versions[i-1].Version)
		}
	}
	latest := versions[len(versions)-1]
	if err := s.validate(latest.Sites); err != nil {
		return cur, false, fmt.Errorf("version %d: %w", latest.Version, err)
	}
	var next state
	for _, d := range s.st.Versions {
		if d.Version < versions[0].Version {
			next.Versions = append(next.Versions, d)
		}
	}
	for _, d := range versions {
		next.Versions = append(next.Versions, Doc{Version: d.Version, Sites: deepCopy(d.Sites)})
	}
	if n := len(next.Versions); n > Keep {
		next.Versions = next.Versions[n-Keep:]
	}
	// The peer's history from its oldest entry on: where the two
	// diverged (two writers made one version), the peer's is the one kept.
	oldest := latest.Version + 1
	if len(history) > 0 {
		oldest = history[0].Version
	}
	for _, c := range s.st.History {
		if c.Version < oldest {
			next.History = append(next.History, c)
		}
	}
	next.History = append(next.History, history...)
	if err := s.write(next); err != nil {
		return cur, false, err
	}
	s.st = next
	return Doc{Version: latest.Version, Sites: deepCopy(latest.Sites)}, true, nil
}

// kept describes the versions kept.
func (s *Store) kept() string {
	if len(s.st.Versions) == 0 {
		return "none"
	}
	return fmt.Sprintf("%d to %d", s.st.Versions[0].Version, s.current().Version)
}

// commit validates sites, makes them the next version and persists it.
func (s *Store) commit(sites []site.Config, who, what string) (Doc, error) {
	if err := s.validate(sites); err != nil {
		return Doc{}, err
	}
	d := Doc{Version: s.current().Version + 1, Sites: sites}
	next := state{Versions: append(slices.Clone(s.st.Versions), d),
		History: append(slices.Clone(s.st.History), Change{Version: d.Version, Time: s.now().UTC(), Who: who, What: what})}
	if n := len(next.Versions); n > Keep {
		next.Versions = next.Versions[n-Keep:]
	}
	if err := s.write(next); err != nil {
		return Doc{}, err
	}
	s.st = next
	return Doc{Version: d.Version, Sites: deepCopy(d.Sites)}, nil
}

// validate compiles every site, naming the site and the field of an error,
// then checks the set.
func (s *Store) validate(sites []site.Config) error {
	var errs []error
	for _, c := range sites {
		if _, err := c.Compile(); err != nil {
			errs = append(errs, fmt.Errorf("%w: sites[%s]: %w", ErrInvalid, NameOf(c), err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if s.check != nil {
		if err := s.check(sites); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	return nil
}

// write replaces the store's file with st whole: a crash leaves the old
// file or the new one.
func (s *Store) write(st state) error {
	b, err := yaml.Marshal(st)
	if err != nil {
		return fmt.Errorf("sitedoc: %w", err)
	}
	dir := filepath.Dir(s.path)
	f, err := os.CreateTemp(dir, fileName+".*")
	if err != nil {
		return fmt.Errorf("sitedoc: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("sitedoc: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the rename itself
		_ = d.Close()
	}
	return nil
}

// deepCopy copies sites through their YAML form, which holds every field
// exactly: what a store keeps shares nothing with its callers.
func deepCopy(sites []site.Config) []site.Config {
	if len(sites) == 0 {
		return nil
	}
	b, err := yaml.Marshal(sites)
	if err != nil {
		panic(fmt.Sprintf("sitedoc: a site does not marshal: %v", err))
	}
	var out []site.Config
	if err := yaml.Unmarshal(b, &out); err != nil {
		panic(fmt.Sprintf("sitedoc: a site does not read back: %v", err))
	}
	return out
}

// NameOf is a site's name: its name, else its first host.
func NameOf(c site.Config) string {
	if c.Name != "" {
		return c.Name
	}
	if len(c.Hosts) > 0 {
		return c.Hosts[0]
	}
	return ""
}

// changedFields names the fields of the file in which a and b differ.
func changedFields(a, b site.Config) []string {
	fa, fb := fields(a), fields(b)
	var out []string
	for k, v := range fb {
		if !reflect.DeepEqual(fa[k], v) {
			out = append(out, k)
		}
	}
	for k := range fa {
		if _, ok := fb[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// fields is c as the file's fields and their values.
func fields(c site.Config) map[string]any {
	b, err := yaml.Marshal(c)
	if err != nil {
		return nil
	}
	var m map[string]any
	_ = yaml.Unmarshal(b, &m)
	return m
}
