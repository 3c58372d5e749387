package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// TestDev is what `make run` does: the dev command starts the demo origin and
// three edges and prints their URLs; the README's quick start lines get the
// Cache-Status, origin count and owner their comments say. Ctrl-C (the
// context) stops it with exit code 0.
func TestDev(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr testutil.SyncBuffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"dev", "--origin-http", "127.0.0.1:0", "--http", "127.0.0.1:0",
			"--metrics", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--https", "127.0.0.1:0", "--latency", "0"}, &stdout, &stderr)
	}()
	re := regexp.MustCompile(`demo origin  (http://\S+)\n  edge-1       (http://\S+) .*admin ([^,\s]+), https \S+\)\n  edge-2       (http://\S+).*\n  edge-3       (http://\S+)`)
	var m []string
	deadline := time.Now().Add(10 * time.Second)
	for m == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no URLs printed; stdout %q stderr %q", stdout.String(), stderr.String())
		}
		m = re.FindStringSubmatch(stdout.String())
		time.Sleep(10 * time.Millisecond)
	}
	// The README's ports, and where this run listens instead.
	at := map[string]string{"8000": m[1], "8080": m[2], "8081": m[4], "8082": m[5]}
	if !strings.Contains(stdout.String(), "curl -si "+m[2]+"/css/site.css") {
		t.Errorf("no curl lines: %s", stdout.String())
	}
	steps := quickStart(t)
	if len(steps) < 6 {
		t.Fatalf("found %d quick start lines with an expected answer in the README", len(steps))
	}
	for _, st := range steps {
		switch {
		case st.admin != "":
			var out, errOut testutil.SyncBuffer
			if c := run(t.Context(), []string{"admin", "--addr", m[3], "locate", st.admin}, &out, &errOut); c != 0 ||
				!regexp.MustCompile(`(?m)^owner\s+`+regexp.QuoteMeta(st.want)+`$`).MatchString(out.String()) {
				t.Errorf("locate %s: exit %d, %s%s; the README says owner %s", st.admin, c, out.String(), errOut.String(), st.want)
			}
		default:
			resp, err := http.Get(at[st.port] + st.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got := strings.TrimSpace(string(body))
			if st.header {
				got = "Cache-Status: " + resp.Header.Get("Cache-Status")
			}
			if got != st.want {
				t.Errorf("README quick start, :%s%s: got %q, the README says %q", st.port, st.path, got, st.want)
			}
		}
	}
	// The HTTPS line dev prints: HTTP/2 with the certificate it made.
	hm := regexp.MustCompile(`curl -si --cacert (\S+) (https://localhost:\d+/\S+)`).FindStringSubmatch(stdout.String())
	if hm == nil {
		t.Fatalf("no HTTPS line: %s", stdout.String())
	}
	pem, err := os.ReadFile(hm[1])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get(hm[2])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" || resp.Header.Get("Cache-Status") == "" {
		t.Errorf("dev's HTTPS line: %s %s", resp.Proto, resp.Header.Get("Cache-Status"))
	}
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("exit code %d; stderr %s", c, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("dev did not stop")
	}
	if _, err := os.Stat(hm[1]); !os.IsNotExist(err) {
		t.Errorf("dev left its certificates behind: %v", err)
	}
}

// quickStep is a line of the README's quick start with the answer its
// comment promises: a Cache-Status (header), a body, or the owner locate
// names (admin is then the URL located).
type quickStep struct {
	port, path, want, admin string
	header                  bool
}

// quickStart reads the README's quick start lines that say what they answer.
func quickStart(t *testing.T) []quickStep {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "<!-- quick start: tested by TestDev in cmd/meshcdn -->\n```sh\n")
	if !ok {
		t.Fatal("no quick start block in the README")
	}
	block, _, _ = strings.Cut(block, "```")
	status := regexp.MustCompile(`^curl -si http://127\.0\.0\.1:(\d+)(\S+) \| grep -i cache-status\s+# (Cache-Status: .+)$`)
	body := regexp.MustCompile(`^curl -s  http://127\.0\.0\.1:(\d+)(\S+)\s+# (\{.+)$`)
	locate := regexp.MustCompile(`^bin/meshcdn admin locate (\S+)\s+# owner: (\S+)$`)
	var steps []quickStep
	for line := range strings.Lines(block) {
		line = strings.TrimSpace(line)
		if s := status.FindStringSubmatch(line); s != nil {
			steps = append(steps, quickStep{port: s[1], path: s[2], want: s[3], header: true})
		} else if s := body.FindStringSubmatch(line); s != nil {
			steps = append(steps, quickStep{port: s[1], path: s[2], want: s[3]})
		} else if s := locate.FindStringSubmatch(line); s != nil {
			steps = append(steps, quickStep{admin: s[1], want: s[2]})
		}
	}
	return steps
}

// TestEdgeConfigErrors: a bad configuration exits 2 naming the file and field.
func TestEdgeConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(bad, []byte("sites:\n  - hosts: [a.com]\n    origins: [\"http://o\"]\n    rules: [{regex: '(', action: cache}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"edge", "--config", bad}, nil, "edge.yaml: sites[0].rules[0].regex: error parsing regexp"},
		{[]string{"edge", "--config", filepath.Join(dir, "none.yaml")}, nil, "none.yaml: no such file"},
		{[]string{"edge"}, nil, "origin: no origin: set --origin"},
		{[]string{"edge", "--origin", "ftp://x"}, nil, `--origin: "ftp://x": scheme must be http or https`},
		{[]string{"edge", "--origin", "http://o", "--memory", "huge"}, nil, `invalid size "huge"`},
		{[]string{"edge", "--origin", "http://o"}, map[string]string{"MESHCDN_MEMORY": "much"}, `MESHCDN_MEMORY="much": invalid size`},
		{[]string{"edge", "--origin", "http://o", "--log-level", "loud"}, nil, `--log-level "loud"`},
		{[]string{"edge", "--origin", "http://o", "extra"}, nil, `unexpected argument "extra"`},
		{[]string{"bogus"}, nil, `unknown command "bogus"`},
	}
	for _, tt := range tests {
		for k, v := range tt.env {
			t.Setenv(k, v)
		}
		var stdout, stderr testutil.SyncBuffer
		if c := run(t.Context(), tt.args, &stdout, &stderr); c != 2 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tt.args, c, stderr.String(), tt.want)
		}
		for k := range tt.env {
			os.Unsetenv(k)
		}
	}
}

// TestFlagsEnvAndFile: a flag beats MESHCDN_<FLAG>, which beats the file.
func TestFlagsEnvAndFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(file, []byte("node:\n  name: from-file\n  memory: 32MiB\n  http: 127.0.0.1:1\nmesh:\n  gossip: 127.0.0.1:7946\n  peer: 127.0.0.1:7070\norigin:\n  default: [\"http://file-origin\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"MESHCDN_NAME": "from-env", "MESHCDN_MEMORY": "16MiB", "MESHCDN_ORIGIN": "http://env-origin"}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var f edgeFlags
	f.register(fs)
	if err := parseFlags(fs, []string{"--config", file, "--memory", "8MiB"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.edgeConfig(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "from-env" || cfg.MemoryBytes != 8<<20 || cfg.HTTPAddr != "127.0.0.1:1" ||
		len(cfg.Origins) != 1 || cfg.Origins[0].Host != "env-origin" {
		t.Errorf("config %+v", cfg)
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr testutil.SyncBuffer
	if c := run(t.Context(), []string{"version"}, &stdout, &stderr); c != 0 || stdout.String() != "meshcdn dev\n" {
		t.Errorf("version: %d %q", c, stdout.String())
	}
}

// TestUsageOutput: every command and subcommand answers -h and --help with
// its usage on stdout, exit 0, and nothing on stderr; every usage error
// prints one line naming the problem and a hint to the -h of the command
// that rejected it, without the usage dump that would bury it (exit 2).
func TestUsageOutput(t *testing.T) {
	admin := []string{"members", "locate", "purge", "purge-status", "prefetch", "stats", "explain", "drain", "config"}
	commands := [][]string{{}, {"edge"}, {"router"}, {"sign"}, {"origin"}, {"dev"}, {"admin"}, {"healthcheck"}, {"ca"}, {"ca", "init"},
		{"ca", "issue"}, {"ca", "gossip-key"}, {"ca", "gossip-key", "new"}, {"version"}}
	for _, c := range admin {
		commands = append(commands, []string{"admin", c})
	}
	for _, cmd := range commands {
		for _, h := range []string{"-h", "--help"} {
			args := append(slices.Clone(cmd), h)
			var stdout, stderr testutil.SyncBuffer
			code := run(t.Context(), args, &stdout, &stderr)
			if code != 0 || !strings.Contains(stdout.String(), "Usage") || stderr.String() != "" {
				t.Errorf("meshcdn %v: exit %d, stdout %q, stderr %q; want the usage on stdout", args, code, stdout.String(), stderr.String())
			}
		}
	}
	dir := t.TempDir()
	for _, tt := range []struct {
		args []string
		want string // the problem; the hint follows it
		hint string
	}{
		{nil, "a command is required", "meshcdn -h"},
		{[]string{"nosuch"}, `unknown command "nosuch"`, "meshcdn -h"},
		{[]string{"version", "extra"}, `unexpected argument "extra"`, "meshcdn version -h"},
		{[]string{"edge", "--memory", "12XB"}, `invalid size "12XB"`, "meshcdn edge -h"},
		{[]string{"edge", "--nope"}, "-nope", "meshcdn edge -h"},
		{[]string{"edge", "--origin", "http://o", "extra"}, `unexpected argument "extra"`, "meshcdn edge -h"},
		{[]string{"origin", "--latency", "soon"}, "-latency", "meshcdn origin -h"},
		{[]string{"router", "--nope"}, "-nope", "meshcdn router -h"},
		{[]string{"sign", "--type", "A", "--key", "k3y-k3y-k3y"}, "one URL is required", "meshcdn sign -h"},
		{[]string{"sign", "--type", "D", "--key", "k3y-k3y-k3y", "http://a/b"}, `url_auth.type: "D" is not A, B, C or F`, "meshcdn sign -h"},
		{[]string{"sign", "--type", "A", "--key", "k3y-k3y-k3y", "/b"}, `"/b" is not an absolute http or https URL`, "meshcdn sign -h"},
		{[]string{"sign", "--type", "A", "--key", "k3y-k3y-k3y", "--time", "soon", "http://a/b"}, `--time "soon"`, "meshcdn sign -h"},
		{[]string{"router", "--zones", "z.json", "extra"}, `unexpected argument "extra"`, "meshcdn router -h"},
		{[]string{"router", "--name", "r", "--gossip", "127.0.0.1:0", "--peer", "127.0.0.1:0", "--dns", "off"}, "zones: a coverage-zone file is required", "meshcdn router -h"},
		{[]string{"dev", "extra"}, `unexpected argument "extra"`, "meshcdn dev -h"},
		{[]string{"healthcheck", "--bogus"}, "-bogus", "meshcdn healthcheck -h"},
		{[]string{"admin"}, "a command is required: members, locate", "meshcdn admin -h"},
		{[]string{"admin", "--nope", "members"}, "-nope", "meshcdn admin -h"},
		{[]string{"admin", "nosuch"}, `unknown command "nosuch"`, "meshcdn admin -h"},
		{[]string{"admin", "--timeout", "0", "members"}, "--timeout: must be positive", "meshcdn admin -h"},
		{[]string{"admin", "members", "extra"}, `unexpected argument "extra"`, "meshcdn admin members -h"},
		{[]string{"admin", "locate"}, "one URL is required", "meshcdn admin locate -h"},
		{[]string{"admin", "purge"}, "a URL, --prefix or --tag is required", "meshcdn admin purge -h"},
		{[]string{"admin", "purge", "--nope"}, "-nope", "meshcdn admin purge -h"},
		{[]string{"admin", "purge-status"}, "one purge id is required", "meshcdn admin purge-status -h"},
		{[]string{"admin", "prefetch", "--progress", "loud", "http://a/b"}, `"loud"`, "meshcdn admin prefetch -h"},
		{[]string{"admin", "explain", "-H", "no-colon", "http://a/b"}, "is not 'Name: value'", "meshcdn admin explain -h"},
		{[]string{"admin", "drain", "a", "b"}, `unexpected argument "b"`, "meshcdn admin drain -h"},
		{[]string{"admin", "config", "x"}, `unexpected argument "x"`, "meshcdn admin config -h"},
		{[]string{"ca"}, "a command is required: init, issue or gossip-key", "meshcdn ca -h"},
		{[]string{"ca", "nosuch"}, `unknown command "nosuch"`, "meshcdn ca -h"},
		{[]string{"ca", "init"}, "--dir is required", "meshcdn ca init -h"},
		{[]string{"ca", "init", "--nope"}, "-nope", "meshcdn ca init -h"},
		{[]string{"ca", "issue", "--dir", dir}, "--dir and --name are required", "meshcdn ca issue -h"},
		{[]string{"ca", "gossip-key", "--dir", dir}, "one step is required", "meshcdn ca gossip-key -h"},
		{[]string{"ca", "gossip-key", "--dir", dir, "nosuch"}, `unknown step "nosuch"`, "meshcdn ca gossip-key -h"},
	} {
		var stdout, stderr testutil.SyncBuffer
		code := run(t.Context(), tt.args, &stdout, &stderr)
		out := stderr.String()
		want := "(" + tt.hint + " shows the usage)\n"
		if code != 2 || strings.Count(out, "\n") != 1 || !strings.Contains(out, tt.want) || !strings.HasSuffix(out, want) || stdout.String() != "" {
			t.Errorf("meshcdn %v: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q ending %q", tt.args, code, stdout.String(), out, tt.want, want)
		}
	}
}

// TestAdminOffInFile: admin: "off" in the file turns the admin listener off
// as --admin off does; the flag still wins over the file.
func TestAdminOffInFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(file, []byte("node:\n  admin: \"off\"\norigin:\n  default: [\"http://o\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	parse := func(args ...string) (string, error) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		var f edgeFlags
		f.register(fs)
		f.set = map[string]bool{}
		if err := parseFlagsSet(fs, append([]string{"--config", file, "--gossip", "off"}, args...), func(string) string { return "" }, f.set); err != nil {
			return "", err
		}
		cfg, err := f.edgeConfig(io.Discard)
		return cfg.AdminAddr, err
	}
	if addr, err := parse(); err != nil || addr != "" {
		t.Errorf("admin: off in the file: %q, %v; want no admin listener", addr, err)
	}
	if addr, err := parse("--admin", "127.0.0.1:7999"); err != nil || addr != "127.0.0.1:7999" {
		t.Errorf("--admin over the file's off: %q, %v", addr, err)
	}
}
