// Command meshcdn is the meshcdn CDN edge: edge nodes, a demo origin, and a
// local cluster for trying it out.
//
//	meshcdn edge    [--config FILE] [flags]   run an edge node
//	meshcdn origin  [--http ADDR] [--dir DIR] run the demo origin
//	meshcdn router  --zones FILE --domain NAME  send users to the nearest healthy edges
//	meshcdn dev                               demo origin + 3 edges on 127.0.0.1
//	meshcdn admin   [--addr ADDR] COMMAND     the admin API's client
//	meshcdn sign    --type T --key K URL      print a signed URL (Alibaba Cloud CDN types A, B, C, F)
//	meshcdn healthcheck                       probe the local node's /readyz
//	meshcdn ca      init|issue|gossip-key ... the cluster CA, node certificates, gossip keys
//	meshcdn version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `meshcdn is a CDN edge: static resources from edge caches, dynamic ones from the origin.

Usage:
  meshcdn edge    [--config FILE] [flags]   run an edge node (meshcdn edge -h for flags)
  meshcdn origin  [--http ADDR] [--dir DIR] [--latency D]
                                            run the demo origin
  meshcdn router  --zones FILE --domain NAME [flags]
                                            send users to healthy edges of the nearest region
                                            (DNS and HTTP 302; meshcdn router -h)
  meshcdn dev                               run the demo origin and three meshed edges on 127.0.0.1
  meshcdn admin   [--addr ADDR] COMMAND     operate the cluster: members, locate, purge, prefetch,
                                            stats, explain, drain, config (meshcdn admin -h)
  meshcdn sign    --type A|B|C|F --key KEY URL
                                            print URL signed as a site's url_auth checks it
  meshcdn healthcheck [--addr ADDR]         exit 0 if the local node is ready (for container HEALTHCHECKs)
  meshcdn ca      init|issue|gossip-key --dir DIR ...
                                            create the cluster CA and gossip key, sign node certificates
                                            (meshcdn ca -h)
  meshcdn version                           print the version

Every command prints its usage with -h or --help.
`

// run is main without the process: it returns the exit code (0 ok, 1 runtime
// failure, 2 usage or configuration error).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return report(stderr, "", usageError{err: errors.New("a command is required: edge, router, origin, dev, admin, sign, healthcheck, ca or version")})
	}
	var err error
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "edge":
		err = runEdge(ctx, rest, stdout, stderr)
	case "origin":
		err = runOrigin(ctx, rest, stdout, stderr)
	case "dev":
		err = runDev(ctx, rest, stdout, stderr)
	case "admin":
		err = runAdmin(ctx, rest, stdout, stderr)
	case "router":
		err = runRouter(ctx, rest, stdout, stderr)
	case "sign":
		err = runSign(ctx, rest, stdout, stderr)
	case "healthcheck":
		err = runHealthcheck(ctx, rest, stdout, stderr)
	case "ca":
		err = runCA(ctx, rest, stdout, stderr)
	case "version", "--version", "-v":
		err = runVersion(rest, stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
	default:
		return report(stderr, "", usageError{err: fmt.Errorf("unknown command %q", cmd)})
	}
	return report(stderr, "meshcdn "+cmd, err)
}

// report prints err, if any, on one line and returns the exit code: 0, 1 for
// a runtime failure, 2 for a usage error, whose line ends with a hint to the
// usage of the command that rejected it (cmd, unless the error names a
// subcommand).
func report(stderr io.Writer, cmd string, err error) int {
	var uerr usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &uerr):
		switch {
		case uerr.help != "":
			cmd = uerr.help
		case cmd == "":
			cmd = "meshcdn"
		}
		fmt.Fprintf(stderr, "meshcdn: %v (%s -h shows the usage)\n", err, cmd)
		return 2
	default:
		fmt.Fprintf(stderr, "meshcdn: %v\n", err)
		return 1
	}
}

// runVersion prints the version.
func runVersion(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("meshcdn version", flag.ContinueOnError)
	setUsage(fs, stdout, "Usage: meshcdn version\n\nPrints the version of this meshcdn binary.\n")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	_, err := fmt.Fprintln(stdout, "meshcdn", version)
	return err
}

// setUsage makes fs print synopsis, then its flags if it has any, to out
// on -h (and -help, --help).
func setUsage(fs *flag.FlagSet, out io.Writer, synopsis string) {
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), synopsis)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprint(fs.Output(), "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
}

// usageError is a bad command, flag, argument, environment value or
// configuration: exit code 2.
type usageError struct {
	err error
	// help is the command whose usage the hint names ("meshcdn admin
	// purge"); empty: the command run.
	help string
}

// withHelp names cmd in the hint of err, a usage error that names none yet.
func withHelp(err error, cmd string) error {
	if u, ok := err.(usageError); ok && u.help == "" {
		u.help = cmd
		return u
	}
	return err
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }
