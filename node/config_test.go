package node

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/internal/yamlkeys"
	"github.com/meshcdn/meshcdn/node/site"
	"github.com/meshcdn/meshcdn/node/tlsconf"
)

func TestParseFile(t *testing.T) {
	yaml := `
node:
  name: edge-a
  http: 127.0.0.1:0
  memory: 64MiB
  max_object_size: 4MiB
  hit_for_pass: 30s
  access_log: true
origin:
  default: ["http://10.0.0.9:8080"]
  connect_timeout: 3s
mesh:
  join: ["edges.internal:7946"]
  purge_lease: 5s
  handoff_window: 5m
  drain_on_stop: 5s
  insecure: true
  tls: {ca_file: /etc/meshcdn/mesh/ca.pem, ca_key_file: /etc/meshcdn/mesh/ca-key.pem}
sites:
  - name: www
    hosts: [www.example.com, "*.img.example.com"]
    origins: ["http://10.0.0.5", "https://backup.example.com:8443"]
    cache_key: {query: include, params: [v]}
    rules:
      - {path_prefix: /api/, action: bypass}
      - {extensions: [html], action: cache, ttl: 1d, follow_origin: true}
`
	c, err := ParseFile("edge.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "edge-a" || c.MemoryBytes != 64<<20 || c.MaxObjectSize != 4<<20 || c.HitForPass != 30*time.Second ||
		!c.AccessLog || len(c.Origins) != 1 || c.Origin.DialTimeout != 3*time.Second || len(c.Sites) != 1 ||
		c.Mesh == nil || c.Mesh.PurgeLease != 5*time.Second || c.Mesh.HandoffWindow != 5*time.Minute || c.Mesh.DrainOnStop != 5*time.Second || c.Mesh.Join[0] != "edges.internal:7946" || !c.Mesh.Insecure || c.Mesh.TLS.CAKeyFile != "/etc/meshcdn/mesh/ca-key.pem" {
		t.Fatalf("parsed %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := New(c); err != nil {
		t.Fatal(err)
	}
}

// TestConfigErrors: every error names the file and the field (or line), and all
// problems are reported at once.
func TestConfigErrors(t *testing.T) {
	tests := []struct {
		yaml string
		want []string
	}{
		{"node:\n  nmae: x\n", []string{"edge.yaml: line 2: node.nmae is not a setting (did you mean name?)"}},
		{"node:\n  name: a\n  memmory: 1GiB\n", []string{"edge.yaml: line 3: node.memmory is not a setting (did you mean memory?)"}},
		{"mesh:\n  tls: {ca_file: a, certfile: b}\n", []string{"line 2: mesh.tls.certfile is not a setting (did you mean cert_file?)"}},
		{"sites:\n  - hosts: [a.com]\n    rules:\n      - {path_prefx: /a, action: cache}\n", []string{"line 4: sites[0].rules[0].path_prefx is not a setting (did you mean path_prefix?)"}},
		{"nodes:\n  name: a\n", []string{"line 1: nodes is not a setting (did you mean node?)"}},
		{"node:\n  zzzzzzzz: 1\n", []string{"line 2: node.zzzzzzzz is not a setting"}},
		{"node:\n  memory: lots\n", []string{"edge.yaml:", "line 2:", `invalid size "lots"`}},
		{"node:\n  hit_for_pass: soon\n", []string{"edge.yaml:", `invalid duration "soon"`}},
		{"origin:\n  default: [\"ftp://x\"]\n", []string{"edge.yaml: origin.default[0]:", "scheme must be http or https"}},
		{"sites:\n  - hosts: [a.com]\n    origins: [\"http://o\"]\n    rules:\n      - {regex: '(', action: cache}\n      - {path_prefix: /x, action: keep}\n",
			[]string{"edge.yaml: sites[0].rules[0].regex: error parsing regexp", `edge.yaml: sites[0].rules[1].action: "keep" is not cache or bypass`}},
		{"sites:\n  - hosts: []\n", []string{"edge.yaml: sites[0].hosts: at least one host", "edge.yaml: sites[0].origins: at least one origin"}},
		{"sites: 5\n", []string{"edge.yaml:", "cannot unmarshal"}},
		{"sites:\n  - hosts: [a.com]\n    origins: [\"http://o\"]\n    url_auth: {type: E, key: 1234567890abcdef}\n    referer: {allow: [a.com], deny: [b.com]}\n    rate_limit: {requests: 5, per: 0s}\n    compression: {types: [text]}\n",
			[]string{`edge.yaml: sites[0].url_auth.type: "E" is not A, B, C or F`, "sites[0].referer: allow and deny exclude each other",
				"sites[0].rate_limit: requests (5) and per (0s) must be positive", `sites[0].compression.types[0]: "text" is not a media type`}},
		{"sites:\n  - hosts: [a.com]\n    url_auth: {tpye: A}\n", []string{"line 3: sites[0].url_auth.tpye is not a setting (did you mean type?)"}},
		{"sites:\n  - hosts: [a.com]\n    origins: [\"http://o\"]\n    heuristic: {factor: 2, max: 500d}\n",
			[]string{"sites[0].heuristic.factor: 2 is not above 0 and at most 1", "sites[0].heuristic.max: 12000h0m0s is not between 1s and 365d"}},
		{"sites:\n  - hosts: [a.com]\n    origins: [\"http://o\"]\n    heuristic: sometimes\n", []string{`line 4: heuristic: "sometimes" is neither off nor a mapping`}},
		{"sites:\n  - hosts: [a.com]\n    heuristic: {factr: 0.2}\n", []string{"line 3: sites[0].heuristic.factr is not a setting (did you mean factor?)"}},
		{"sites:\n  - hosts: [a.com]\n    origins: [\"http://o\"]\n    forward_headers: [Cookie]\n", []string{`sites[0].forward_headers[0]: "Cookie" is forwarded anyway`}},
	}
	for _, tt := range tests {
		_, err := ParseFile("edge.yaml", []byte(tt.yaml))
		if err == nil {
			t.Errorf("%q: no error", tt.yaml)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q lacks %q", tt.yaml, err, w)
			}
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		c    Config
		want string
	}{
		{Config{}, "origin: no origin"},
		{Config{Origins: mustOrigins(t), HTTPAddr: "8080"}, `http: "8080" is not host:port`},
		{Config{Origins: mustOrigins(t), MemoryBytes: 1 << 20, MaxObjectSize: 2 << 20}, "max_object_size: 2.0MiB exceeds the memory budget 1.0MiB"},
		{Config{Origins: mustOrigins(t), FillTimeout: -1}, "fill_timeout: must not be negative"},
		{Config{Origins: mustOrigins(t), MaxConnections: -1, MaxConnectionsPerIP: -5}, "max_connections: must not be negative"},
		{Config{Origins: mustOrigins(t), MaxConnectionsPerIP: -5}, "max_connections_per_ip: must not be negative"},
		{Config{Origins: mustOrigins(t), Mesh: &MeshConfig{PurgeLease: time.Millisecond}}, "purge_lease: 1ms is not between 100ms and 1m"},
		{Config{Origins: mustOrigins(t), Mesh: &MeshConfig{HandoffWindow: 2 * time.Hour}}, "handoff_window: 2h0m0s is not between 1s and 1h"},
		{Config{Origins: mustOrigins(t), Mesh: &MeshConfig{DrainOnStop: 15 * time.Second}}, "drain_on_stop: 15s is not between 0 and node.shutdown_timeout (15s)"},
		{Config{Origins: mustOrigins(t), Mesh: &MeshConfig{TLS: tlsconf.MeshFiles{CAFile: "ca.pem", CAKeyFile: "ca-key.pem", KeyFile: "k.pem"}}}, "mesh.tls: ca_key_file (the node signs its own certificate) excludes cert_file and key_file"},
		{Config{Origins: mustOrigins(t), Mesh: &MeshConfig{GossipAddr: "10.0.0.1:7946", PeerAddr: "127.0.0.1:7070"}}, `mesh: gossip "10.0.0.1:7946" listen beyond loopback without a gossip key or mesh TLS`},
		{Config{HTTPSAddr: ":8443", Sites: []site.Config{acmeSiteConfig}}, "sites[0].acme: no certificate authority: set node.acme.directory"},
		{Config{ACME: &ACMEConfig{Directory: "https://ca.example/dir", Dir: "/tmp"}, Sites: []site.Config{acmeSiteConfig}}, "sites[0].acme: no HTTPS listener"},
		{Config{HTTPSAddr: ":8443", ACME: &ACMEConfig{Directory: "http://ca.example/dir", Dir: "/tmp"}, Sites: []site.Config{acmeSiteConfig}}, `acme.directory: "http://ca.example/dir" is not an https URL`},
		{Config{HTTPSAddr: ":8443", ACME: &ACMEConfig{Directory: "https://ca.example/dir"}, Sites: []site.Config{acmeSiteConfig}}, "acme.dir: where the account key and certificates are kept"},
		{Config{HTTPSAddr: ":8443", ACME: &ACMEConfig{Directory: "https://ca.example/dir", Dir: "/tmp"},
			Sites: []site.Config{{Hosts: []string{"*.shop.test"}, Origins: []site.OriginConfig{{URL: "http://o"}}, ACME: true}}},
			"sites[0].hosts[0]: \"*.shop.test\": acme obtains certificates with the HTTP-01 challenge, which cannot prove a wildcard name"},
		{Config{HTTPSAddr: ":8443", Origins: mustOrigins(t)}, "https: the HTTPS listener has no certificate"},
		{Config{Sites: []site.Config{{Hosts: []string{"a.test"}, Origins: []site.OriginConfig{{URL: "http://o"}}, HTTPS: "redirect"}}}, "sites[0].https: redirect sends clients to HTTPS, but there is no HTTPS listener"},
	}
	for _, tt := range tests {
		if err := tt.c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.c, err, tt.want)
		}
		if _, err := New(tt.c); err == nil {
			t.Errorf("New accepted %+v", tt.c)
		}
	}
}

// acmeSiteConfig is a site whose certificate comes over ACME.
var acmeSiteConfig = site.Config{Hosts: []string{"shop.test"}, Origins: []site.OriginConfig{{URL: "http://o"}}, ACME: true}

func TestLoadFileMissing(t *testing.T) {
	_, err := LoadFile(filepath.Join(t.TempDir(), "nope.yaml"))
	if !os.IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
}

func mustOrigins(t *testing.T) []*url.URL {
	u, err := url.Parse("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	return []*url.URL{u}
}

// TestGossipKeys: mesh.gossip_key takes several keys, comma-separated (the
// first sends, all are accepted); errors name the key.
func TestGossipKeys(t *testing.T) {
	k1 := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	k2 := base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	c, err := ParseFile("edge.yaml", []byte("origin: {default: [http://127.0.0.1:1]}\nmesh:\n  gossip: 127.0.0.1:7946\n  peer: 127.0.0.1:7070\n  gossip_key: \""+k1+", "+k2+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Mesh.GossipKeys) != 2 || string(c.Mesh.GossipKeys[0]) != "0123456789abcdef" {
		t.Fatalf("keys %q", c.Mesh.GossipKeys)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseFile("edge.yaml", []byte("mesh:\n  gossip_key: \""+k1+",not*base64\"\n")); err == nil ||
		!strings.Contains(err.Error(), "mesh.gossip_key: key 2: not base64") {
		t.Errorf("bad second key: %v", err)
	}
	// The same keys from a file, one per line, with a comment.
	file := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(file, []byte("# rotating: the second is the old key\n"+k1+"\n\n"+k2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fc, err := ParseFile("edge.yaml", []byte("mesh:\n  gossip_key_file: "+file+"\n"))
	if err != nil || len(fc.Mesh.GossipKeys) != 2 || string(fc.Mesh.GossipKeys[1]) != "fedcba9876543210fedcba9876543210" {
		t.Errorf("gossip_key_file: %v %q", err, fc.Mesh.GossipKeys)
	}
	empty := filepath.Join(t.TempDir(), "empty.key")
	_ = os.WriteFile(empty, []byte("# nothing\n"), 0o600)
	for _, y := range []struct{ yaml, want string }{
		{"mesh:\n  gossip_key_file: " + empty + "\n", "mesh.gossip_key_file: " + empty + " holds no key"},
		{"mesh:\n  gossip_key_file: " + file + "\n  gossip_key: " + k1 + "\n", "mesh.gossip_key and mesh.gossip_key_file exclude each other"},
	} {
		if _, err := ParseFile("edge.yaml", []byte(y.yaml)); err == nil || !strings.Contains(err.Error(), y.want) {
			t.Errorf("%q: %v; want %q", y.yaml, err, y.want)
		}
	}
	c.Mesh.GossipKeys = append(c.Mesh.GossipKeys, []byte("short"))
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "gossip_key: key 3 is 5 bytes") {
		t.Errorf("a short key: %v", err)
	}
}

// TestAdminTLSConfig: client certificates protect an admin listener beyond
// loopback as a token does; the TLS files go together.
func TestAdminTLSConfig(t *testing.T) {
	base := Config{Origins: mustOrigins(t), AdminAddr: "0.0.0.0:7071"}
	if err := base.Validate(); err == nil {
		t.Fatal("an exposed admin listener without a token or client CA was accepted")
	}
	ok := base
	ok.AdminCertFile, ok.AdminKeyFile, ok.AdminClientCAFile = "a.pem", "a-key.pem", "ca.pem"
	if err := ok.Validate(); err != nil {
		t.Errorf("client certificates beyond loopback: %v", err)
	}
	for _, c := range []Config{
		{Origins: mustOrigins(t), AdminAddr: "127.0.0.1:7071", AdminCertFile: "a.pem"},
		{Origins: mustOrigins(t), AdminAddr: "127.0.0.1:7071", AdminClientCAFile: "ca.pem"},
	} {
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "admin_tls") {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

// TestREADMEConfigKeys: every key of the README's configuration example is a
// setting, so the reference cannot drift from the code.
func TestREADMEConfigKeys(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "### The configuration file\n\n```yaml\n")
	if !ok {
		t.Fatal("no configuration example in the README")
	}
	example, _, _ := strings.Cut(rest, "```")
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(example), &root); err != nil {
		t.Fatal(err)
	}
	for _, err := range yamlkeys.Unknown(&root, reflect.TypeFor[File]()) {
		t.Errorf("README example: %v", err)
	}
}

// TestACMEFile: node.acme in the file, its ca_file read (and refused when
// it holds no certificate).
func TestACMEFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("nothing"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := "node:\n  https: \":8443\"\n  acme: {directory: \"https://ca.test/dir\", email: ops@shop.test, dir: " + dir + ", ca_file: %s}\n" +
		"sites:\n  - {hosts: [shop.test], origins: [\"http://10.0.0.1\"], acme: true}\n"
	if _, err := ParseFile("edge.yaml", []byte(fmt.Sprintf(yaml, bad))); err == nil || !strings.Contains(err.Error(), "edge.yaml: node.acme.ca_file: no PEM certificate in "+bad) {
		t.Errorf("a ca_file without a certificate: %v", err)
	}
	cert := testutil.WriteCert(t, dir, "ca", []string{"ca.test"}, testutil.CertOptions{})
	c, err := ParseFile("edge.yaml", []byte(fmt.Sprintf(yaml, cert.CertFile)))
	if err != nil {
		t.Fatal(err)
	}
	if a := c.ACME; a == nil || a.Directory != "https://ca.test/dir" || a.Email != "ops@shop.test" || a.Dir != dir || a.Roots == nil || !c.Sites[0].ACME {
		t.Errorf("node.acme: %+v", c.ACME)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}
