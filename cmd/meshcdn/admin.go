package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshcdn/meshcdn/node"
	adminv1 "github.com/meshcdn/meshcdn/proto/meshcdn/admin/v1"
)

const adminUsage = `Usage: meshcdn admin [--addr ADDR] [--token T | --token-file F] [--cacert F [--cert F --key F]] [--json] [--timeout D] COMMAND [ARGS]

A client of a node's gRPC admin API (the same calls grpcurl makes).

Commands:
  members                                   the cluster's members as this node sees them
  locate URL [--replicas N] [--slices N]    the node that owns URL's object (and its first N slices; -1: all)
  purge [--soft] [--prefix URL]... [--tag TAG]... [URL...]
                                            purge on every node; a receipt per node
  purge-status ID                           which nodes have applied purge ID since
  prefetch [--file FILE] [--progress auto|always|never] [URL...]
                                            fill URLs at their owners (FILE: one URL a line, - for stdin)
  stats                                     counters per node and for the cluster
  explain [--method M] [-H 'Name: value']... URL
                                            what a request would get, and why
  drain [NODE] [--wait]                     take NODE (default: the node asked) out of the ring; --wait
                                            returns once it has handed its hottest objects off
  config                                    the node's effective configuration

Flags:
`

// adminFlags are the flags of `meshcdn admin` before the command.
type adminFlags struct {
	addr, token, tokenFile string
	cacert, cert, key      string
	json                   bool
	timeout                time.Duration
}

func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f adminFlags
	fs := flag.NewFlagSet("meshcdn admin", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() { fmt.Fprint(fs.Output(), adminUsage); fs.PrintDefaults() }
	fs.StringVar(&f.addr, "addr", "127.0.0.1:7071", "admin API `address` of any node (env MESHCDN_ADMIN_ADDR)")
	fs.StringVar(&f.token, "token", "", "bearer `token` for the admin API (env MESHCDN_ADMIN_TOKEN)")
	fs.StringVar(&f.tokenFile, "token-file", "", "read the token from this `file`")
	fs.StringVar(&f.cacert, "cacert", "", "speak TLS, trusting the node's certificate if this CA `file` signed it")
	fs.StringVar(&f.cert, "cert", "", "client certificate `file` for a node that requires one (with --key and --cacert)")
	fs.StringVar(&f.key, "key", "", "client key `file`")
	fs.BoolVar(&f.json, "json", false, "print the API's answer as JSON (prefetch: one object a line)")
	fs.DurationVar(&f.timeout, "timeout", time.Minute, "give up on a call after this long")
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if v := os.Getenv("MESHCDN_ADMIN_ADDR"); v != "" && !set["addr"] {
		f.addr = v
	}
	if v := os.Getenv("MESHCDN_ADMIN_TOKEN"); v != "" && !set["token"] && !set["token-file"] {
		f.token = v
	}
	if f.tokenFile != "" {
		tok, err := node.ReadToken(f.tokenFile)
		if err != nil {
			return usageError{err: fmt.Errorf("--token-file: %w", err)}
		}
		f.token = tok
	}
	if f.timeout <= 0 {
		return usageError{err: errors.New("--timeout: must be positive")}
	}
	if fs.NArg() == 0 {
		return usageError{err: errors.New("admin: a command is required: " + adminCommands)}
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	commands := map[string]func(context.Context, *adminCall, []string) error{
		"members": adminMembers, "locate": adminLocate, "purge": adminPurge, "purge-status": adminPurgeStatus, "prefetch": adminPrefetch,
		"stats": adminStats, "explain": adminExplain, "drain": adminDrain, "config": adminConfig,
	}
	run, ok := commands[cmd]
	if !ok {
		return usageError{err: fmt.Errorf("admin: unknown command %q (%s)", cmd, adminCommands)}
	}
	if slices.ContainsFunc(rest, func(a string) bool { return a == "-h" || a == "-help" || a == "--help" }) {
		fmt.Fprint(stdout, commandUsage(cmd))
		return nil
	}
	return withHelp(callAdmin(ctx, f, run, rest, stdout, stderr), "meshcdn admin "+cmd)
}

// adminCommands lists the commands of meshcdn admin.
const adminCommands = "members, locate, purge, purge-status, prefetch, stats, explain, drain, config"

// callAdmin connects to the node at f.addr and runs one admin command.
func callAdmin(ctx context.Context, f adminFlags, run func(context.Context, *adminCall, []string) error, rest []string, stdout, stderr io.Writer) error {
	creds, err := f.credentials()
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return usageError{err: fmt.Errorf("--addr: %w", err)}
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if f.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+f.token)
	}
	c := &adminCall{api: adminv1.NewAdminServiceClient(conn), flags: f, stdout: stdout, stderr: stderr}
	return c.explainError(run(ctx, c, rest))
}

// credentials are cleartext, or TLS with --cacert (and a client certificate
// with --cert and --key).
func (f adminFlags) credentials() (credentials.TransportCredentials, error) {
	if f.cacert == "" {
		if f.cert != "" || f.key != "" {
			return nil, usageError{err: errors.New("--cert and --key need --cacert")}
		}
		return insecure.NewCredentials(), nil
	}
	pem, err := os.ReadFile(f.cacert)
	if err != nil {
		return nil, usageError{err: fmt.Errorf("--cacert: %w", err)}
	}
	cfg := &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
	if !cfg.RootCAs.AppendCertsFromPEM(pem) {
		return nil, usageError{err: fmt.Errorf("--cacert: no PEM certificate in %s", f.cacert)}
	}
	if (f.cert == "") != (f.key == "") {
		return nil, usageError{err: errors.New("--cert and --key go together")}
	}
	if f.cert != "" {
		c, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, usageError{err: fmt.Errorf("--cert/--key: %w", err)}
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return credentials.NewTLS(cfg), nil
}

// adminCall is one command's client, flags and output.
type adminCall struct {
	api            adminv1.AdminServiceClient
	flags          adminFlags
	stdout, stderr io.Writer
}

// explainError turns an RPC error into a message an operator can act on;
// InvalidArgument is a usage error (exit code 2).
func (c *adminCall) explainError(err error) error {
	st, ok := status.FromError(err)
	if err == nil || !ok {
		return err
	}
	switch st.Code() {
	case codes.InvalidArgument:
		return usageError{err: errors.New(st.Message())}
	case codes.Unauthenticated:
		return fmt.Errorf("%s: %s (give the node's token with --token, --token-file or MESHCDN_ADMIN_TOKEN)", c.flags.addr, st.Message())
	case codes.Unavailable:
		return fmt.Errorf("cannot reach the admin API at %s: %s", c.flags.addr, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: no answer within %v (--timeout)", c.flags.addr, c.flags.timeout)
	}
	return fmt.Errorf("%s: %s: %s", c.flags.addr, st.Code(), st.Message())
}

// printJSON writes m as indented JSON.
func (c *adminCall) printJSON(m proto.Message) error {
	b, err := stableJSON(m, "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "%s\n", b)
	return err
}

// stableJSON is m in the API's JSON, indented by indent ("" for one line).
// protojson varies its white space from build to build on purpose; scripts
// and people get the same bytes from every build.
func stableJSON(m proto.Message, indent string) ([]byte, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return nil, err
	}
	if indent == "" {
		return out.Bytes(), nil
	}
	var ind bytes.Buffer
	err = json.Indent(&ind, out.Bytes(), "", indent)
	return ind.Bytes(), err
}

// table writes rows aligned in columns.
func (c *adminCall) table(header string, rows [][]string) error {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// parseInterleaved parses fs over args, letting flags and positional
// arguments mix (`purge URL --soft`), and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	defer fs.SetOutput(fs.Output())
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err: fmt.Errorf("%s: %w", fs.Name(), err)}
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// commandUsage is the part of adminUsage about one command.
func commandUsage(cmd string) string {
	_, block, _ := strings.Cut(adminUsage, "Commands:\n")
	block, _, _ = strings.Cut(block, "\nFlags:")
	var b strings.Builder
	b.WriteString("Usage: meshcdn admin [--addr ADDR] [--token T] [...] " + cmd + " (meshcdn admin -h for the flags before it)\n\n")
	in := false
	for line := range strings.Lines(block) {
		if name, _, _ := strings.Cut(strings.TrimSpace(line), " "); strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "   ") {
			in = name == cmd
		}
		if in {
			b.WriteString(line)
		}
	}
	return b.String()
}

// strList is a repeatable string flag.
type strList []string

func (s *strList) String() string     { return strings.Join(*s, ",") }
func (s *strList) Set(v string) error { *s = append(*s, v); return nil }

func noArgs(name string, args []string) error {
	if len(args) > 0 {
		return usageError{err: fmt.Errorf("%s: unexpected argument %q", name, args[0])}
	}
	return nil
}

func adminMembers(ctx context.Context, c *adminCall, args []string) error {
	if err := noArgs("members", args); err != nil {
		return err
	}
	resp, err := c.api.ListMembers(ctx, &adminv1.ListMembersRequest{})
	if stop, err := c.answered(resp, err); stop {
		return err
	}
	var rows [][]string
	for _, m := range resp.GetMembers() {
		name := m.GetName()
		if m.GetSelf() {
			name += " *"
		}
		share := "-"
		if m.GetState() != "failed" && m.GetRole() != "router" {
			share = fmt.Sprintf("%.1f%%", 100*m.GetOwnedShare())
		}
		ready := "no"
		if m.GetReady() {
			ready = "yes"
		}
		rows = append(rows, []string{name, dash(m.GetRole()), m.GetState(), ready, fmt.Sprint(m.GetLoad()), dash(m.GetRegion()), dash(m.GetHttpAddr()),
			dash(m.GetAdminAddr()), dash(m.GetVersion()), share})
	}
	return c.table("NAME\tROLE\tSTATE\tREADY\tLOAD\tREGION\tHTTP\tADMIN\tVERSION\tOWNS", rows)
}

// answered handles what every command does with an answer: on an error, or
// with --json, it is all there is to do (stop is true).
func (c *adminCall) answered(resp proto.Message, err error) (stop bool, _ error) {
	if err != nil {
		return true, err
	}
	if c.flags.json {
		return true, c.printJSON(resp)
	}
	return false, nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func adminLocate(ctx context.Context, c *adminCall, args []string) error {
	fs := flag.NewFlagSet("locate", flag.ContinueOnError)
	replicas := fs.Int("replicas", 0, "")
	slices := fs.Int("slices", 0, "")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{err: errors.New("locate: one URL is required, e.g. meshcdn admin locate http://www.example.com/a.png")}
	}
	resp, err := c.api.Locate(ctx, &adminv1.LocateRequest{Url: pos[0], Replicas: int32(*replicas), Slices: int32(*slices)})
	if stop, err := c.answered(resp, err); stop {
		return err
	}
	rows := [][]string{
		{"site", resp.GetSite()}, {"key", resp.GetKey()}, {"region", dash(resp.GetRegion())}, {"owner", resp.GetOwner()},
		{"shield owner", dash(resp.GetShieldOwner())},
		{"replicas", dash(strings.Join(resp.GetReplicas(), ", "))}, {"ring epoch", fmt.Sprint(resp.GetEpoch())},
	}
	if resp.GetSliceSize() > 0 {
		size := "unknown here"
		if resp.GetObjectSize() > 0 {
			size = fmt.Sprint(resp.GetObjectSize())
		}
		rows = append(rows, []string{"slice size", fmt.Sprint(resp.GetSliceSize())}, []string{"object size", size})
	}
	for _, s := range resp.GetSlices() {
		owner := s.GetOwner()
		if s.GetShieldOwner() != "" {
			owner += " (shield: " + s.GetShieldOwner() + ")"
		}
		rows = append(rows, []string{fmt.Sprintf("slice %d", s.GetIndex()), owner})
	}
	return c.table("FIELD\tVALUE", rows)
}

func adminPurge(ctx context.Context, c *adminCall, args []string) error {
	fs := flag.NewFlagSet("purge", flag.ContinueOnError)
	soft := fs.Bool("soft", false, "")
	var prefixes, tags strList
	fs.Var(&prefixes, "prefix", "")
	fs.Var(&tags, "tag", "")
	urls, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(urls)+len(prefixes)+len(tags) == 0 {
		return usageError{err: errors.New("purge: a URL, --prefix or --tag is required")}
	}
	resp, err := c.api.Purge(ctx, &adminv1.PurgeRequest{Urls: urls, Prefixes: prefixes, Tags: tags, Soft: *soft})
	if err != nil {
		return err
	}
	var missed []string
	for _, r := range resp.GetNodes() {
		if !r.GetApplied() {
			missed = append(missed, r.GetNode())
		}
	}
	if c.flags.json {
		err = c.printJSON(resp)
	} else {
		fmt.Fprintf(c.stdout, "purge %s\n", resp.GetPurgeId())
		var rows [][]string
		for _, r := range resp.GetNodes() {
			if r.GetApplied() {
				rows = append(rows, []string{r.GetNode(), "applied", fmt.Sprint(r.GetRemoved()), ""})
			} else {
				rows = append(rows, []string{r.GetNode(), "NOT APPLIED", "-", r.GetError()})
			}
		}
		err = c.table("NODE\tRESULT\tREMOVED\tNOTE", rows)
	}
	if err == nil && len(missed) > 0 {
		err = fmt.Errorf("purge %s not applied on %s; they catch up from the others' purge logs when reachable (meshcdn admin purge-status %s)",
			resp.GetPurgeId(), strings.Join(missed, ", "), resp.GetPurgeId())
	}
	return err
}

func adminPurgeStatus(ctx context.Context, c *adminCall, args []string) error {
	if len(args) != 1 {
		return usageError{err: errors.New("purge-status: one purge id is required (the id purge printed)")}
	}
	resp, err := c.api.GetPurge(ctx, &adminv1.GetPurgeRequest{PurgeId: args[0]})
	if stop, err := c.answered(resp, err); stop {
		return err
	}
	var rows [][]string
	var missed []string
	for _, r := range resp.GetNodes() {
		if r.GetApplied() {
			rows = append(rows, []string{r.GetNode(), "applied", ""})
		} else {
			rows = append(rows, []string{r.GetNode(), "NOT APPLIED", r.GetError()})
			missed = append(missed, r.GetNode())
		}
	}
	if err := c.table("NODE\tRESULT\tNOTE", rows); err != nil {
		return err
	}
	if len(missed) > 0 {
		return fmt.Errorf("purge %s not applied yet on %s", resp.GetPurgeId(), strings.Join(missed, ", "))
	}
	return nil
}

func adminPrefetch(ctx context.Context, c *adminCall, args []string) error {
	fs := flag.NewFlagSet("prefetch", flag.ContinueOnError)
	file := fs.String("file", "", "")
	progress := fs.String("progress", "auto", "")
	urls, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if *file != "" {
		more, err := readURLs(*file)
		if err != nil {
			return usageError{err: fmt.Errorf("prefetch --file: %w", err)}
		}
		urls = append(urls, more...)
	}
	bar, err := c.prefetchBar(*progress, len(urls))
	if err != nil {
		return err
	}
	stream, err := c.api.Prefetch(ctx, &adminv1.PrefetchRequest{Urls: urls})
	if err != nil {
		return err
	}
	results, err := c.receivePrefetch(stream, bar)
	bar.finish()
	if err != nil {
		return err
	}
	failed := 0
	for _, m := range results {
		if m.GetError() != "" {
			failed++
		}
	}
	if !c.flags.json {
		if err := c.prefetchTable(results, failed); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("prefetch: %d of %d URLs failed", failed, len(results))
	}
	return nil
}

// prefetchBar returns the progress bar --progress asks for: nil for none.
func (c *adminCall) prefetchBar(progress string, total int) (*progressBar, error) {
	switch progress {
	case "always":
		return &progressBar{w: c.stderr, total: total, drawn: -1}, nil
	case "auto":
		if isTerminal(c.stderr) && !c.flags.json {
			return &progressBar{w: c.stderr, total: total, drawn: -1}, nil
		}
		return nil, nil
	case "never":
		return nil, nil
	default:
		return nil, usageError{err: fmt.Errorf("prefetch --progress: %q is not auto, always or never", progress)}
	}
}

// receivePrefetch collects the prefetch results as they arrive, printing
// each as a JSON line with --json and moving the bar.
func (c *adminCall) receivePrefetch(stream grpc.ServerStreamingClient[adminv1.PrefetchResponse], bar *progressBar) ([]*adminv1.PrefetchResponse, error) {
	var results []*adminv1.PrefetchResponse
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return results, nil
		}
		if err != nil {
			return results, err
		}
		results = append(results, m)
		if c.flags.json {
			b, err := stableJSON(m, "")
			if err != nil {
				return results, err
			}
			fmt.Fprintf(c.stdout, "%s\n", b)
		}
		bar.update(m)
	}
}

// prefetchTable prints the results by URL, and a summary line.
func (c *adminCall) prefetchTable(results []*adminv1.PrefetchResponse, failed int) error {
	slices.SortStableFunc(results, func(a, b *adminv1.PrefetchResponse) int { return strings.Compare(a.GetUrl(), b.GetUrl()) })
	var rows [][]string
	var bytes int64
	for _, m := range results {
		bytes += m.GetBytes()
		note := m.GetCacheStatus()
		if m.GetError() != "" {
			note = "error: " + m.GetError()
		}
		rows = append(rows, []string{m.GetUrl(), dash(m.GetNode()), fmt.Sprint(m.GetStatus()), humanize.IBytes(uint64(m.GetBytes())), note})
	}
	if err := c.table("URL\tNODE\tSTATUS\tSIZE\tCACHE-STATUS", rows); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%d URLs, %s, %d failed\n", len(results), humanize.IBytes(uint64(bytes)), failed)
	return nil
}

// readURLs reads one URL a line (blank lines and # comments skipped) from
// path, or from standard input for "-".
func readURLs(path string) ([]string, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressBar draws prefetch progress on one line, redrawn in place. A nil
// bar draws nothing.
type progressBar struct {
	w            io.Writer
	total, done  int
	failed       int
	bytes        int64
	lastRedrawAt time.Time
	drawn        int // done at the last draw; -1 before the first
}

const barWidth = 30

func (b *progressBar) update(m *adminv1.PrefetchResponse) {
	if b == nil {
		return
	}
	b.done++
	b.bytes += m.GetBytes()
	if m.GetError() != "" {
		b.failed++
	}
	if b.done < b.total && time.Since(b.lastRedrawAt) < 50*time.Millisecond {
		return
	}
	b.lastRedrawAt = time.Now()
	b.draw()
}

func (b *progressBar) draw() {
	b.drawn = b.done
	filled := barWidth
	if b.total > 0 {
		filled = barWidth * b.done / b.total
	}
	fmt.Fprintf(b.w, "\r[%s%s] %d/%d URLs  %s  %d failed", strings.Repeat("#", filled), strings.Repeat(".", barWidth-filled),
		b.done, b.total, humanize.IBytes(uint64(b.bytes)), b.failed)
}

func (b *progressBar) finish() {
	if b == nil {
		return
	}
	if b.drawn != b.done {
		b.draw()
	}
	fmt.Fprintln(b.w)
}

func adminStats(ctx context.Context, c *adminCall, args []string) error {
	if err := noArgs("stats", args); err != nil {
		return err
	}
	resp, err := c.api.GetStats(ctx, &adminv1.GetStatsRequest{})
	if stop, err := c.answered(resp, err); stop {
		return err
	}
	var rows [][]string
	for _, s := range append(resp.GetNodes(), resp.GetCluster()) {
		if s.GetError() != "" {
			rows = append(rows, []string{s.GetNode(), "error: " + s.GetError()})
			continue
		}
		var total int64
		for _, v := range s.GetRequests() {
			total += v
		}
		tiers := map[string]string{}
		for _, t := range s.GetTiers() {
			tiers[t.GetTier()] = fmt.Sprintf("%d / %s", t.GetObjects(), humanize.IBytes(uint64(t.GetBytes())))
		}
		rows = append(rows, []string{s.GetNode(), fmt.Sprint(total), fmt.Sprintf("%.1f%%", 100*s.GetRequestHitRatio()),
			fmt.Sprintf("%.1f%%", 100*s.GetByteHitRatio()), fmt.Sprint(s.GetOriginRequests()), fmt.Sprint(s.GetPeerFetches()),
			dash(tiers["memory"]), dash(tiers["copies"]), dash(tiers["disk"])})
	}
	return c.table("NODE\tREQUESTS\tHIT\tBYTE HIT\tORIGIN\tPEER\tMEMORY\tCOPIES\tDISK", rows)
}

func adminExplain(ctx context.Context, c *adminCall, args []string) error {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	method := fs.String("method", "GET", "")
	var hdrs strList
	fs.Var(&hdrs, "H", "")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{err: errors.New("explain: one URL is required, e.g. meshcdn admin explain http://www.example.com/a.png")}
	}
	req := &adminv1.ExplainRequest{Url: pos[0], Method: *method, Headers: map[string]string{}}
	for _, h := range hdrs {
		name, value, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return usageError{err: fmt.Errorf("explain -H: %q is not 'Name: value'", h)}
		}
		req.Headers[strings.TrimSpace(name)] = strings.TrimSpace(value)
	}
	resp, err := c.api.Explain(ctx, req)
	if stop, err := c.answered(resp, err); stop {
		return err
	}
	stored := "no"
	if resp.GetStored() {
		stored = "yes, in " + resp.GetTier()
	}
	ttl := "-"
	if resp.GetStored() || resp.GetTtlSource() != "" {
		ttl = fmt.Sprintf("%s (from %s)", time.Duration(resp.GetTtlSeconds())*time.Second, dash(resp.GetTtlSource()))
	}
	age := "-"
	if resp.GetStored() {
		age = (time.Duration(resp.GetAgeSeconds()) * time.Second).String()
	}
	rows := [][]string{
		{"site", resp.GetSite()}, {"rule", resp.GetRule() + " (" + resp.GetAction() + ")"}, {"key", resp.GetKey()},
		{"owner", dash(resp.GetOwner())}, {"stored", stored}, {"age", age}, {"ttl", ttl}, {"outcome", resp.GetOutcome()},
	}
	if resp.GetSliceSize() > 0 {
		size, here := "unknown here", "-"
		if resp.GetObjectSize() > 0 {
			size = fmt.Sprint(resp.GetObjectSize())
			here = fmt.Sprintf("%d of %d", resp.GetSlicesHere(), (resp.GetObjectSize()-1)/resp.GetSliceSize()+1)
		}
		rows = append(rows, []string{"slice size", fmt.Sprint(resp.GetSliceSize())}, []string{"object size", size}, []string{"slices here", here})
	}
	for _, cond := range resp.GetStoreConditions() {
		rows = append(rows, []string{"needs", cond}) // what a response must have to be stored
	}
	if resp.GetAccess() != "" {
		rows = append(rows, []string{"access", resp.GetAccess()})
	}
	for _, r := range resp.GetAccessRules() {
		rows = append(rows, []string{"access rule", r})
	}
	return c.table("FIELD\tVALUE", rows)
}

func adminDrain(ctx context.Context, c *adminCall, args []string) error {
	fs := flag.NewFlagSet("drain", flag.ContinueOnError)
	wait := fs.Bool("wait", false, "")
	args, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(args) > 1 {
		return usageError{err: fmt.Errorf("drain: unexpected argument %q", args[1])}
	}
	req := &adminv1.DrainRequest{Wait: *wait}
	if len(args) == 1 {
		req.Node = args[0]
	}
	resp, err := c.api.Drain(ctx, req)
	if stop, err := c.answered(resp, err); stop {
		return err
	}
	if *wait {
		_, err = fmt.Fprintf(c.stdout, "%s is draining: its new owners took %d of its objects (%d offers failed) in %v; it can be stopped\n",
			resp.GetNode(), resp.GetHandedOff(), resp.GetNotTaken(), resp.GetTook().AsDuration().Round(time.Millisecond))
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "%s is draining: out of the ring, it offers its hottest objects to their new owners and answers for the rest; stop it once they have moved (drain --wait tells when)\n", resp.GetNode())
	return err
}

func adminConfig(ctx context.Context, c *adminCall, args []string) error {
	if err := noArgs("config", args); err != nil {
		return err
	}
	resp, err := c.api.GetConfig(ctx, &adminv1.GetConfigRequest{})
	if stop, err := c.answered(resp, err); stop {
		return err
	}
	if _, err := fmt.Fprintf(c.stdout, "# effective configuration of %s (secrets are never shown)\n", resp.GetNode()); err != nil {
		return err
	}
	return c.printJSON(resp.GetConfig())
}
