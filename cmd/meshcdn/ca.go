package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/meshcdn/meshcdn/node/tlsconf"
)

const caUsage = `Usage:
  meshcdn ca init  --dir DIR [--validity D]
      create the cluster CA: DIR/ca.pem and DIR/ca-key.pem (mode 0600); default validity 87600h (10 years)
  meshcdn ca issue --dir DIR --name NAME [--host HOST]... [--validity D]
      sign a certificate for node NAME (its name in the SAN peers check; each HOST, a DNS name or an IP
      address, as a further SAN; usable as client and server): DIR/NAME.pem and DIR/NAME-key.pem (0600);
      default validity 8760h (1 year), never past the CA's
Existing files are never overwritten.
`

// runCA manages the cluster CA that peers' certificates chain to.
func runCA(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, caUsage)
		if len(args) == 0 {
			return usageError{errors.New("ca: a command is required: init or issue")}
		}
		return nil
	}
	fs := flag.NewFlagSet("meshcdn ca "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, caUsage) }
	dir := fs.String("dir", "", "the CA `directory`")
	validity := fs.Duration("validity", 0, "how long the certificate is valid")
	switch args[0] {
	case "init":
		if err := parseCAFlags(fs, args[1:]); err != nil {
			return err
		}
		if *dir == "" {
			return usageError{errors.New("ca init: --dir is required")}
		}
		if err := tlsconf.InitCA(*dir, *validity); err != nil {
			return fmt.Errorf("ca init: %w", err)
		}
		fmt.Fprintf(stdout, "cluster CA written: %s, %s\n", filepath.Join(*dir, tlsconf.CAFile), filepath.Join(*dir, tlsconf.CAKeyFile))
		return nil
	case "issue":
		name := fs.String("name", "", "the node's `name` (as in --name of meshcdn edge)")
		var hosts strList
		fs.Var(&hosts, "host", "a DNS name or IP `address` of the node (repeatable)")
		if err := parseCAFlags(fs, args[1:]); err != nil {
			return err
		}
		if *dir == "" || *name == "" {
			return usageError{errors.New("ca issue: --dir and --name are required")}
		}
		path, err := tlsconf.Issue(*dir, *name, hosts, *validity)
		if err != nil {
			return fmt.Errorf("ca issue: %w", err)
		}
		fmt.Fprintf(stdout, "certificate for %s written: %s, %s\n", *name, path, filepath.Join(*dir, *name+"-key.pem"))
		return nil
	default:
		return usageError{fmt.Errorf("ca: unknown command %q (want init or issue)", args[0])}
	}
}

// parseCAFlags parses a ca subcommand's flags; a negative validity is a
// usage error.
func parseCAFlags(fs *flag.FlagSet, args []string) error {
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if v := fs.Lookup("validity"); v != nil {
		if d, _ := time.ParseDuration(v.Value.String()); d < 0 {
			return usageError{fmt.Errorf("%s --validity: %v is negative", fs.Name(), d)}
		}
	}
	return nil
}
