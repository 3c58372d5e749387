package sitedoc

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshcdn/meshcdn/node/site"
)

// checkSet is what a node checks of a whole set: no host bound twice.
func checkSet(sites []site.Config) error {
	var compiled []*site.Site
	for _, c := range sites {
		s, err := c.Compile()
		if err != nil {
			return err
		}
		compiled = append(compiled, s)
	}
	_, err := site.NewSet(compiled, nil)
	return err
}

func siteOf(name, origin string, hosts ...string) site.Config {
	return site.Config{Name: name, Hosts: hosts, Origins: []site.OriginConfig{{URL: origin}}}
}

// TestStore walks a store through every change: a seed, a put that adds
// and one that changes, refusals that change nothing, a removal, a
// rollback, and a restart that finds it all again.
func TestStore(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, checkSet)
	if err != nil {
		t.Fatal(err)
	}
	if d := s.Current(); d.Version != 0 || len(d.Sites) != 0 {
		t.Fatalf("a new store: %+v", d)
	}
	shop := siteOf("shop", "http://10.0.0.1", "shop.example")
	if d, seeded, err := s.Seed([]site.Config{shop}, "file"); err != nil || !seeded || d.Version != 1 {
		t.Fatalf("seed: %+v %v %v", d, seeded, err)
	}
	if _, seeded, _ := s.Seed(nil, "file"); seeded {
		t.Fatal("a second seed replaced the document")
	}
	blog := siteOf("blog", "http://10.0.0.2", "blog.example")
	if d, err := s.Put(blog, "ops"); err != nil || d.Version != 2 || len(d.Sites) != 2 {
		t.Fatalf("put blog: %+v %v", d, err)
	}
	if d, _ := s.Put(blog, "ops"); d.Version != 2 {
		t.Errorf("putting the same site again made version %d", d.Version)
	}
	blog.Origins[0].URL = "http://10.0.0.3"
	if d, err := s.Put(blog, "alice"); err != nil || d.Version != 3 || d.Sites[1].Origins[0].URL != "http://10.0.0.3" {
		t.Fatalf("change blog: %+v %v", d, err)
	}

	// Refusals name what is wrong and change nothing.
	for _, c := range []struct {
		site site.Config
		want string
	}{
		{siteOf("bad", "ftp://10.0.0.9", "bad.example"), "sites[bad]: origins[0]"},
		{siteOf("thief", "http://10.0.0.9", "shop.example"), `"shop.example" is already bound to site "shop"`},
		{site.Config{Origins: []site.OriginConfig{{URL: "http://10.0.0.9"}}}, "hosts: a site needs at least one host"},
	} {
		_, err := s.Put(c.site, "mallory")
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("put %s: %v; want %q", NameOf(c.site), err, c.want)
		}
	}
	if _, err := s.Remove("nosuch", "ops"); !errors.Is(err, ErrNoSite) {
		t.Errorf("remove of a site not there: %v", err)
	}
	if d := s.Current(); d.Version != 3 {
		t.Fatalf("refused changes made version %d", d.Version)
	}

	if d, err := s.Remove("blog", "ops"); err != nil || d.Version != 4 || len(d.Sites) != 1 {
		t.Fatalf("remove blog: %+v %v", d, err)
	}
	if d, err := s.Rollback(3, "ops"); err != nil || d.Version != 5 || len(d.Sites) != 2 || d.Sites[1].Origins[0].URL != "http://10.0.0.3" {
		t.Fatalf("rollback to 3: %+v %v", d, err)
	}
	if _, err := s.Rollback(99, "ops"); !errors.Is(err, ErrNoVersion) || !strings.Contains(err.Error(), "kept: 1 to 5") {
		t.Errorf("rollback to a version never made: %v", err)
	}

	h := s.History()
	want := []struct{ who, what string }{{"file", "seeded with 1 sites"}, {"ops", "added blog"}, {"alice", "changed blog: origins"},
		{"ops", "removed blog"}, {"ops", "rolled back to version 3"}}
	if len(h) != len(want) {
		t.Fatalf("history %+v", h)
	}
	for i, w := range want {
		if h[i].Version != uint64(i+1) || h[i].Who != w.who || h[i].What != w.what || h[i].Time.IsZero() {
			t.Errorf("history[%d] = %+v; want version %d by %s: %s", i, h[i], i+1, w.who, w.what)
		}
	}

	// A restart finds the version, the sites and the history again.
	again, err := Open(dir, checkSet)
	if err != nil {
		t.Fatal(err)
	}
	if d := again.Current(); d.Version != 5 || len(d.Sites) != 2 || d.Sites[1].Origins[0].URL != "http://10.0.0.3" {
		t.Errorf("after a restart: %+v", d)
	}
	if len(again.History()) != 5 {
		t.Errorf("after a restart: history %+v", again.History())
	}
	if d, err := again.Rollback(1, "ops"); err != nil || d.Version != 6 || len(d.Sites) != 1 {
		t.Errorf("rollback after a restart: %+v %v", d, err)
	}
}

// TestOpenRefusesDamage: a file that does not parse, or whose current
// version does not validate, is an error at Open, not an empty document
// that would replace the cluster's.
func TestOpenRefusesDamage(t *testing.T) {
	for name, text := range map[string]string{
		"not YAML":            "versions: [",
		"invalid site":        "versions:\n  - version: 1\n    sites:\n      - hosts: [a.example]\n        origins: [\"ftp://x\"]\n",
		"versions misordered": "versions:\n  - version: 2\n  - version: 1\n",
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, fileName), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(dir, checkSet); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
}

// TestStoreSharesNothing: what a caller puts or gets back and then changes
// does not change what the store keeps.
func TestStoreSharesNothing(t *testing.T) {
	s, err := Open(t.TempDir(), checkSet)
	if err != nil {
		t.Fatal(err)
	}
	c := siteOf("shop", "http://10.0.0.1", "shop.example")
	d, err := s.Put(c, "ops")
	if err != nil {
		t.Fatal(err)
	}
	c.Origins[0].URL = "http://10.6.6.6"
	d.Sites[0].Hosts[0] = "evil.example"
	got := s.Current()
	got.Sites[0].Origins[0].URL = "http://10.7.7.7"
	if cur := s.Current().Sites[0]; cur.Origins[0].URL != "http://10.0.0.1" || cur.Hosts[0] != "shop.example" {
		t.Errorf("the store keeps %+v after its callers changed their copies", cur)
	}
}

// TestAdopt: a store catches up with a peer's newer versions and history,
// ignores older ones, and refuses a version it cannot apply, keeping its
// own; what it adopted survives a restart.
func TestAdopt(t *testing.T) {
	a, _ := Open(t.TempDir(), checkSet)
	dirB := t.TempDir()
	b, _ := Open(dirB, checkSet)
	if _, _, err := a.Seed([]site.Config{siteOf("shop", "http://10.0.0.1", "shop.example")}, "file"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(siteOf("blog", "http://10.0.0.2", "blog.example"), "ops"); err != nil {
		t.Fatal(err)
	}
	d, adopted, err := b.Adopt(a.Export())
	if err != nil || !adopted || d.Version != 2 || len(d.Sites) != 2 {
		t.Fatalf("b adopting a's: %+v %v %v", d, adopted, err)
	}
	if h := b.History(); len(h) != 2 || h[1].What != "added blog" || h[1].Who != "ops" {
		t.Errorf("b's history: %+v", h)
	}
	if _, adopted, _ := b.Adopt(a.Export()); adopted {
		t.Error("b adopted the version it has")
	}
	if _, err := b.Remove("shop", "ops"); err != nil { // b is ahead now
		t.Fatal(err)
	}
	if _, adopted, _ := b.Adopt(a.Export()); adopted {
		t.Error("b adopted an older version")
	}
	// A version b cannot apply: a host bound twice.
	versions, history := a.Export()
	bad := versions[len(versions)-1]
	bad.Version = 9
	bad.Sites = append(bad.Sites, siteOf("thief", "http://10.0.0.9", "blog.example"))
	_, adopted, err = b.Adopt(append(versions, bad), history)
	if adopted || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "version 9") {
		t.Errorf("an invalid version: adopted %v, %v", adopted, err)
	}
	if d := b.Current(); d.Version != 3 || len(d.Sites) != 1 {
		t.Errorf("b after refusing it: %+v", d)
	}
	if _, err := a.Put(siteOf("docs", "http://10.0.0.4", "docs.example"), "ops"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(siteOf("img", "http://10.0.0.5", "img.example"), "ops"); err != nil {
		t.Fatal(err)
	}
	if d, adopted, err := b.Adopt(a.Export()); err != nil || !adopted || d.Version != 4 || len(d.Sites) != 4 {
		t.Fatalf("b adopting a's version 4: %+v %v %v", d, adopted, err)
	}
	// b's own version 3 lost to a's: the history is a's.
	if h := b.History(); len(h) != 4 || h[2].What != "added docs" || h[3].What != "added img" {
		t.Errorf("b's history after adopting past its own version 3: %+v", h)
	}
	again, err := Open(dirB, checkSet)
	if err != nil || again.Current().Version != 4 || len(again.History()) != 4 {
		t.Errorf("b after a restart: %+v, %d changes, %v", again.Current(), len(again.History()), err)
	}
}
