// Package edgetls is the TLS of the client-facing HTTPS listener: the sites'
// certificates chosen by SNI and reloaded when their files change, session
// ticket keys that every member derives alike, and the listener that hands
// HTTP/1.1 and HTTP/2 connections to their servers.
package edgetls

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Pair names a certificate file (the leaf first, then its chain) and the
// file of its private key.
type Pair struct {
	CertFile, KeyFile string
}

// Source is where certificates are configured: the default ones (Site
// empty) or a site's. Label names the setting in errors
// ("sites[0].certificates", "--tls-cert").
type Source struct {
	Site  string
	Label string
	Pairs []Pair
}

// Cert is one loaded certificate and what it was loaded from.
type Cert struct {
	Site   string // "" for a default certificate
	Names  []string
	Expiry time.Time
	tls    *tls.Certificate
	pair   Pair
	label  string
	stamps [2]stamp
}

// Store holds the certificates of the HTTPS listener. Its methods are safe
// for concurrent use.
type Store struct {
	// siteOf names the site a host belongs to ("" for none).
	siteOf func(host string) string

	mu      sync.RWMutex
	certs   []*Cert            // from files, in configuration order
	managed map[string]*Cert   // by site: obtained over ACME (SetManaged)
	byName  map[string][]*Cert // lower-case DNS names, "*.example.com" for wildcards
	deflt   []*Cert
}

// stamp is what a file looked like when it was read.
type stamp struct {
	mod  time.Time
	size int64
}

func statOf(path string) stamp {
	fi, err := os.Stat(path) // through symbolic links, as Kubernetes swaps them
	if err != nil {
		return stamp{}
	}
	return stamp{fi.ModTime(), fi.Size()}
}

// ErrNoCertificate is returned by GetCertificate for a server name that no
// certificate may answer.
var ErrNoCertificate = errors.New("no certificate for this server name")

// New loads every source's certificates and checks each: the file holds a
// certificate, the key matches it, it is valid now. siteOf tells the site
// of a server name, so that a site's certificate answers only names of its
// own site. Errors name the source, the file and the problem.
func New(sources []Source, siteOf func(host string) string) (*Store, error) {
	s := &Store{siteOf: siteOf}
	var certs []*Cert
	var errs []error
	for _, src := range sources {
		for i, p := range src.Pairs {
			label := src.Label
			if len(src.Pairs) > 1 || src.Site != "" {
				label = fmt.Sprintf("%s[%d]", src.Label, i)
			}
			c, err := load(p, time.Now())
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", label, err))
				continue
			}
			c.Site, c.label = src.Site, label
			certs = append(certs, c)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.install(certs)
	return s, nil
}

// load reads and checks one pair.
func load(p Pair, now time.Time) (*Cert, error) {
	st := [2]stamp{statOf(p.CertFile), statOf(p.KeyFile)}
	certPEM, err := os.ReadFile(p.CertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(p.KeyFile)
	if err != nil {
		return nil, err
	}
	leaf, err := firstCertificate(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.CertFile, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if bytes.Contains(keyPEM, []byte("-----BEGIN")) && strings.Contains(err.Error(), "does not match") {
			return nil, fmt.Errorf("%s: the key in %s does not match the certificate", p.CertFile, p.KeyFile)
		}
		return nil, fmt.Errorf("%s: %w", p.KeyFile, err)
	}
	switch {
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("%s: expired on %s", p.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return nil, fmt.Errorf("%s: not valid before %s", p.CertFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	var names []string
	for _, n := range leaf.DNSNames {
		names = append(names, strings.ToLower(strings.TrimSuffix(n, ".")))
	}
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: the certificate names no DNS name or IP address (subject alternative names)", p.CertFile)
	}
	pair.Leaf = leaf
	return &Cert{Names: names, Expiry: leaf.NotAfter, tls: &pair, pair: p, stamps: st}, nil
}

// firstCertificate parses the first CERTIFICATE block of a PEM file.
func firstCertificate(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("not a certificate: no PEM CERTIFICATE block")
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not a certificate: %w", err)
		}
		return c, nil
	}
}

// install makes certs, with the managed ones, the ones served.
func (s *Store) install(certs []*Cert) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.installLocked(certs)
}

func (s *Store) installLocked(certs []*Cert) {
	byName := map[string][]*Cert{}
	var deflt []*Cert
	all := slices.Clone(certs)
	for _, site := range slices.Sorted(maps.Keys(s.managed)) {
		all = append(all, s.managed[site])
	}
	for _, c := range all {
		if c.Site == "" {
			deflt = append(deflt, c)
		}
		for _, n := range c.Names {
			byName[n] = append(byName[n], c)
		}
	}
	s.certs, s.byName, s.deflt = certs, byName, deflt
}

// SetManaged makes a certificate obtained for site (over ACME) one of the
// site's, in place of the one set before; the site's files come first.
func (s *Store) SetManaged(site string, certPEM, keyPEM []byte) error {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	c := &Cert{Site: site, Expiry: pair.Leaf.NotAfter, tls: &pair, label: "acme"}
	for _, n := range pair.Leaf.DNSNames {
		c.Names = append(c.Names, strings.ToLower(n))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.managed == nil {
		s.managed = map[string]*Cert{}
	}
	s.managed[site] = c
	s.installLocked(s.certs)
	return nil
}

// GetCertificate is tls.Config.GetCertificate: the certificate for the
// client's server name whose site is the name's site, and among several the
// first the client supports (an ECDSA one before an RSA one, say); for a
// name no such certificate covers, or none given, a default certificate.
// Never another site's certificate.
func (s *Store) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	site := ""
	if name != "" && s.siteOf != nil {
		site = s.siteOf(name)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var candidates []*Cert
	if name != "" {
		candidates = s.named(name, site)
	}
	if len(candidates) == 0 {
		candidates = s.deflt
	}
	if len(candidates) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrNoCertificate, name)
	}
	for _, c := range candidates {
		if hello.SupportsCertificate(c.tls) == nil {
			return c.tls, nil
		}
	}
	return candidates[0].tls, nil
}

// named lists the certificates covering name that site (or the default)
// may serve: an exact name first, then a wildcard one level up.
func (s *Store) named(name, site string) []*Cert {
	var out []*Cert
	keep := func(cs []*Cert) {
		for _, c := range cs {
			if c.Site == "" || c.Site == site {
				out = append(out, c)
			}
		}
	}
	keep(s.byName[name])
	if _, rest, ok := strings.Cut(name, "."); ok && rest != "" {
		keep(s.byName["*."+rest])
	}
	return out
}

// Stale reports whether a certificate or key file changed since it was
// read (or since a reload found it broken).
func (s *Store) Stale() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.ContainsFunc(s.certs, func(c *Cert) bool {
		return statOf(c.pair.CertFile) != c.stamps[0] || statOf(c.pair.KeyFile) != c.stamps[1]
	})
}

// Reload reads every file again. A pair that no longer loads keeps the
// certificate in use, and its error is returned (with the others'); the
// rest are swapped in. Connections in flight keep their certificates.
func (s *Store) Reload() error {
	s.mu.RLock()
	old := slices.Clone(s.certs)
	s.mu.RUnlock()
	now := time.Now()
	certs := make([]*Cert, len(old))
	var errs []error
	for i, c := range old {
		n, err := load(c.pair, now)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.label, err))
			kept := *c
			kept.stamps = [2]stamp{statOf(c.pair.CertFile), statOf(c.pair.KeyFile)} // not again until it changes
			certs[i] = &kept
			continue
		}
		n.Site, n.label = c.Site, c.label
		certs[i] = n
	}
	s.install(certs)
	return errors.Join(errs...)
}

// Managed reports whether c was obtained over ACME (SetManaged) rather than
// read from files.
func (c Cert) Managed() bool { return c.label == "acme" }

// Certs lists the certificates in use, from files and managed.
func (s *Store) Certs() []Cert {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Cert
	for _, c := range s.certs {
		out = append(out, *c)
	}
	for _, site := range slices.Sorted(maps.Keys(s.managed)) {
		out = append(out, *s.managed[site])
	}
	return out
}
