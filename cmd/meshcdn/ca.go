package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/meshcdn/meshcdn/gossip"
	"github.com/meshcdn/meshcdn/node/tlsconf"
)

const caUsage = `Usage:
  meshcdn ca init  --dir DIR [--validity D] [--gossip-key] [--if-absent]
      create the cluster CA: DIR/ca.pem and DIR/ca-key.pem (mode 0600); default validity 87600h (10 years);
      --gossip-key also writes DIR/gossip.key, a new gossip encryption key (0600);
      --if-absent keeps a CA (and gossip key) already in DIR and exits 0
  meshcdn ca issue --dir DIR --name NAME [--role member|admin|server] [--host HOST]... [--validity D] [--if-absent]
      sign a certificate: DIR/NAME.pem and DIR/NAME-key.pem (0600); default validity 8760h (1 year),
      never past the CA's; --if-absent keeps one of the CA's already there, valid now, and exits 0. Each HOST, a DNS name or an IP address, is a SAN. The role says what it opens:
        member (default)  node NAME of the mesh (its name in the SAN peers check; client and server):
                          the peer port, while NAME is a current member
        admin             operator NAME's client certificate: the admin port (--admin-client-ca); no HOST
        server            an HTTPS server's certificate for its HOSTs (at least one): nothing else
  meshcdn ca gossip-key --dir DIR new|add|use|retire
      the gossip key file DIR/gossip.key (one key per line, the first sends, all are accepted):
      new writes one with a new key; rotation is add (a new key, accepted), use (it sends), retire
      (the old one is dropped), each followed by a rolling restart of the edges
Existing files are never overwritten.
`

// runCA manages the cluster CA that peers' certificates chain to.
func runCA(_ context.Context, args []string, stdout, _ io.Writer) error {
	switch {
	case len(args) == 0:
		return usageError{err: errors.New("ca: a command is required: init, issue or gossip-key")}
	case args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help":
		fmt.Fprint(stdout, caUsage)
		return nil
	}
	return withHelp(caCommand(args[0], args[1:], stdout), "meshcdn ca "+args[0])
}

// caCommand runs ca init, issue or gossip-key.
func caCommand(cmd string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("meshcdn ca "+cmd, flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() { fmt.Fprint(fs.Output(), caUsage) }
	dir := fs.String("dir", "", "the CA `directory`")
	validity := fs.Duration("validity", 0, "how long the certificate is valid")
	switch cmd {
	case "init":
		gossipKey := fs.Bool("gossip-key", false, "also write DIR/gossip.key, a new gossip key")
		ifAbsent := fs.Bool("if-absent", false, "keep a CA and gossip key already in DIR")
		if err := parseCAFlags(fs, args); err != nil {
			return err
		}
		if *dir == "" {
			return usageError{err: errors.New("ca init: --dir is required")}
		}
		return caInit(stdout, *dir, *validity, *gossipKey, *ifAbsent)
	case "gossip-key":
		return gossipKeyCommand(stdout, fs, args)
	case "issue":
		name := fs.String("name", "", "the node's `name` (as in --name of meshcdn edge), or the operator's or server's")
		roleName := fs.String("role", string(tlsconf.RoleMember), "what the certificate is for: member (a node), admin (an operator's client) or server (HTTPS)")
		var hosts strList
		fs.Var(&hosts, "host", "a DNS name or IP `address` of the node or server (repeatable)")
		ifAbsent := fs.Bool("if-absent", false, "keep a certificate of the CA already in DIR for NAME, valid now")
		if err := parseCAFlags(fs, args); err != nil {
			return err
		}
		if *dir == "" || *name == "" {
			return usageError{err: errors.New("ca issue: --dir and --name are required")}
		}
		role, err := tlsconf.ParseRole(*roleName)
		if err != nil {
			return usageError{err: fmt.Errorf("ca issue: --%w", err)}
		}
		if *ifAbsent && tlsconf.Issued(*dir, *name) == nil {
			fmt.Fprintf(stdout, "certificate for %s kept: %s\n", *name, filepath.Join(*dir, *name+".pem"))
			return nil
		}
		path, err := tlsconf.Issue(*dir, *name, role, hosts, *validity)
		if err != nil {
			return fmt.Errorf("ca issue: %w", err)
		}
		fmt.Fprintf(stdout, "%s certificate for %s written: %s, %s\n", role, *name, path, filepath.Join(*dir, *name+"-key.pem"))
		return nil
	default:
		return usageError{err: fmt.Errorf("ca: unknown command %q (want init, issue or gossip-key)", cmd), help: "meshcdn ca"}
	}
}

// caInit writes a cluster CA in dir and, with gossipKey, a gossip key
// file; with ifAbsent, what is there already and valid is kept.
func caInit(stdout io.Writer, dir string, validity time.Duration, gossipKey, ifAbsent bool) error {
	caCert, caKey := filepath.Join(dir, tlsconf.CAFile), filepath.Join(dir, tlsconf.CAKeyFile)
	if _, _, err := tlsconf.LoadCA(dir); err == nil && ifAbsent {
		fmt.Fprintf(stdout, "cluster CA kept: %s\n", caCert)
	} else if err := tlsconf.InitCA(dir, validity); err != nil {
		return fmt.Errorf("ca init: %w", err)
	} else {
		fmt.Fprintf(stdout, "cluster CA written: %s, %s\n", caCert, caKey)
	}
	if !gossipKey {
		return nil
	}
	path := filepath.Join(dir, gossipKeyFile)
	if _, err := gossip.ReadKeyFile(path); err == nil && ifAbsent {
		fmt.Fprintf(stdout, "gossip key kept: %s\n", path)
		return nil
	}
	if err := gossip.CreateKeyFile(path); err != nil {
		return fmt.Errorf("ca init: %w", err)
	}
	fmt.Fprintf(stdout, "gossip key written: %s\n", path)
	return nil
}

// gossipKeyFile is the gossip key file of a CA directory.
const gossipKeyFile = "gossip.key"

// gossipKeyCommand runs a step on DIR/gossip.key: new, add, use or retire.
func gossipKeyCommand(stdout io.Writer, fs *flag.FlagSet, args []string) error {
	steps := map[string]struct {
		do   func(string) error
		next string
	}{
		"new":    {gossip.CreateKeyFile, "give it to every edge (--gossip-key-file or mesh.gossip_key_file)"},
		"add":    {gossip.AddKey, "restart the edges one by one; then: use"},
		"use":    {gossip.UseNewestKey, "restart the edges one by one; then: retire"},
		"retire": {gossip.RetireKeys, "restart the edges one by one: the rotation is done"},
	}
	pos, err := parseInterleaved(fs, args) // "new --dir D" and "--dir D new" alike
	if errors.Is(err, flag.ErrHelp) {
		fs.Usage()
	}
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{err: errors.New("ca gossip-key: one step is required: new, add, use or retire")}
	}
	name := pos[0]
	step, ok := steps[name]
	if !ok {
		return usageError{err: fmt.Errorf("ca gossip-key: unknown step %q (want new, add, use or retire)", name)}
	}
	dir := fs.Lookup("dir").Value.String()
	if dir == "" {
		return usageError{err: errors.New("ca gossip-key: --dir is required")}
	}
	path := filepath.Join(dir, gossipKeyFile)
	if err := step.do(path); err != nil {
		return fmt.Errorf("ca gossip-key %s: %w", name, err)
	}
	fmt.Fprintf(stdout, "%s: %s done; %s\n", path, name, step.next)
	return nil
}

// parseCAFlags parses a ca subcommand's flags; a negative validity is a
// usage error.
func parseCAFlags(fs *flag.FlagSet, args []string) error {
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if v := fs.Lookup("validity"); v != nil {
		if d, _ := time.ParseDuration(v.Value.String()); d < 0 {
			return usageError{err: fmt.Errorf("%s --validity: %v is negative", fs.Name(), d)}
		}
	}
	return nil
}
