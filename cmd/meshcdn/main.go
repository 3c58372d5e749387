// Command meshcdn is the meshcdn CDN edge: edge nodes, a demo origin, and a
// local cluster for trying it out.
//
//	meshcdn edge    [--config FILE] [flags]   run an edge node
//	meshcdn origin  [--http ADDR] [--dir DIR] run the demo origin
//	meshcdn dev                               demo origin + 3 edges on 127.0.0.1
//	meshcdn admin   [--addr ADDR] COMMAND     the admin API's client
//	meshcdn healthcheck                       probe the local node's /readyz
//	meshcdn ca      init|issue --dir DIR ...  the cluster CA and node certificates
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
  meshcdn dev                               run the demo origin and three meshed edges on 127.0.0.1
  meshcdn admin   [--addr ADDR] COMMAND     operate the cluster: members, locate, purge, prefetch,
                                            stats, explain, drain, config (meshcdn admin -h)
  meshcdn healthcheck [--addr ADDR]         exit 0 if the local node is ready (for container HEALTHCHECKs)
  meshcdn ca      init|issue --dir DIR ...  create the cluster CA and sign node certificates (meshcdn ca -h)
  meshcdn version                           print the version
`

// run is main without the process: it returns the exit code (0 ok, 1 runtime
// failure, 2 usage or configuration error).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "edge":
		err = runEdge(ctx, rest, stdout, stderr)
	case "origin":
		err = runOrigin(ctx, rest, stdout, stderr)
	case "dev":
		err = runDev(ctx, rest, stdout, stderr)
	case "admin":
		err = runAdmin(ctx, rest, stdout, stderr)
	case "healthcheck":
		err = runHealthcheck(ctx, rest, stdout, stderr)
	case "ca":
		err = runCA(ctx, rest, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "meshcdn", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "meshcdn: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	var uerr usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &uerr):
		fmt.Fprintf(stderr, "meshcdn: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "meshcdn: %v\n", err)
		return 1
	}
}

// usageError is a bad flag, environment value or configuration: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }
