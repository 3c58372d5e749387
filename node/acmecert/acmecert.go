// Package acmecert obtains certificates from an ACME certificate authority
// (RFC 8555: Let's Encrypt, or Pebble in tests) with the HTTP-01 challenge,
// and keeps them on disk. It orders; who orders which certificate in a mesh
// is the node's to decide.
package acmecert

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
)

// Config is where certificates come from and where they are kept.
type Config struct {
	// Directory is the CA's ACME directory URL.
	Directory string
	// Email is the account's contact, optional.
	Email string
	// Roots, when set, are the only CAs trusted for the ACME server's own
	// HTTPS (Pebble's test CA); nil trusts the system's.
	Roots *x509.CertPool
	// Dir keeps the account key and the certificates (created 0700).
	Dir string
	// Log receives what the manager does; nil discards it.
	Log *slog.Logger
}

// Manager orders certificates and answers the HTTP-01 challenges of its
// orders. Its methods are safe for concurrent use.
type Manager struct {
	cfg    Config
	client *acme.Client

	regMu      sync.Mutex
	registered bool

	mu         sync.Mutex
	challenges map[string]string // token → key authorization
}

// Certificate is an issued certificate chain and its private key, PEM.
type Certificate struct {
	CertPEM, KeyPEM     []byte
	Names               []string
	NotBefore, NotAfter time.Time
}

// accountKeyFile is the account key's file in Config.Dir.
const accountKeyFile = "account-key.pem"

// New loads the account key from cfg.Dir, making one the first time.
func New(cfg Config) (*Manager, error) {
	if cfg.Directory == "" || cfg.Dir == "" {
		return nil, errors.New("acme: a directory URL and a storage directory are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "certs"), 0o700); err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	key, err := accountKey(filepath.Join(cfg.Dir, accountKeyFile))
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.Roots != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: cfg.Roots, MinVersion: tls.VersionTLS12}
	}
	return &Manager{cfg: cfg, challenges: map[string]string{},
		client: &acme.Client{Key: key, DirectoryURL: cfg.Directory, UserAgent: "meshcdn",
			HTTPClient: &http.Client{Transport: tr, Timeout: time.Minute}}}, nil
}

// accountKey reads the account key at path, or makes and writes one.
func accountKey(path string) (crypto.Signer, error) {
	if b, err := os.ReadFile(path); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("acme: %s: no PEM key", path)
		}
		k, err := x509.ParseECPrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("acme: %s: %w", path, err)
		}
		return k, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("acme: %w", err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})); err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	return k, nil
}

// writeFile writes data to path through a temporary file and a rename, so
// a reader never sees half of it.
func writeFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// register makes sure the account exists at the CA (once per process).
func (m *Manager) register(ctx context.Context) error {
	m.regMu.Lock()
	defer m.regMu.Unlock()
	if m.registered {
		return nil
	}
	acct := &acme.Account{}
	if m.cfg.Email != "" {
		acct.Contact = []string{"mailto:" + m.cfg.Email}
	}
	_, err := m.client.Register(ctx, acct, acme.AcceptTOS)
	if err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		return fmt.Errorf("acme: registering the account: %w", err)
	}
	m.registered = true
	return nil
}

// Obtain orders a certificate for names (host names, no wildcards) with
// HTTP-01 challenges, which ChallengeResponse answers while it runs, and
// returns it with a new ECDSA P-256 key.
func (m *Manager) Obtain(ctx context.Context, names []string) (*Certificate, error) {
	if len(names) == 0 {
		return nil, errors.New("acme: no names to order")
	}
	if err := m.register(ctx); err != nil {
		return nil, err
	}
	order, err := m.client.AuthorizeOrder(ctx, acme.DomainIDs(names...))
	if err != nil {
		return nil, fmt.Errorf("acme: new order for %v: %w", names, err)
	}
	for _, u := range order.AuthzURLs {
		if err := m.authorize(ctx, u); err != nil {
			return nil, err
		}
	}
	if order, err = m.client.WaitOrder(ctx, order.URI); err != nil {
		return nil, fmt.Errorf("acme: order for %v: %w", names, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: names[0]}, DNSNames: names}, key)
	if err != nil {
		return nil, err
	}
	chain, _, err := m.client.CreateCertFromOrder(ctx, order, csr, true)
	if err != nil {
		return nil, fmt.Errorf("acme: finalizing the order for %v: %w", names, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	var certPEM []byte
	for _, der := range chain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	c, err := Parse(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		return nil, fmt.Errorf("acme: the CA's certificate: %w", err)
	}
	m.cfg.Log.Info("certificate obtained", "names", names, "expires", c.NotAfter)
	return c, nil
}

// authorize completes one authorization with its HTTP-01 challenge.
func (m *Manager) authorize(ctx context.Context, url string) error {
	z, err := m.client.GetAuthorization(ctx, url)
	if err != nil {
		return fmt.Errorf("acme: authorization: %w", err)
	}
	if z.Status == acme.StatusValid {
		return nil
	}
	i := slices.IndexFunc(z.Challenges, func(c *acme.Challenge) bool { return c.Type == "http-01" })
	if i < 0 {
		return fmt.Errorf("acme: %s: the CA offers no http-01 challenge", z.Identifier.Value)
	}
	chal := z.Challenges[i]
	keyAuth, err := m.client.HTTP01ChallengeResponse(chal.Token)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.challenges[chal.Token] = keyAuth
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.challenges, chal.Token)
		m.mu.Unlock()
	}()
	if _, err := m.client.Accept(ctx, chal); err != nil {
		return fmt.Errorf("acme: %s: accepting the challenge: %w", z.Identifier.Value, err)
	}
	if _, err := m.client.WaitAuthorization(ctx, z.URI); err != nil {
		return fmt.Errorf("acme: %s: %w", z.Identifier.Value, err)
	}
	return nil
}

// ChallengePrefix is the path under which a CA fetches HTTP-01 tokens.
const ChallengePrefix = "/.well-known/acme-challenge/"

// tokenPattern is what a challenge token looks like (base64url).
var tokenPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)

// ValidToken reports whether token can be an HTTP-01 token.
func ValidToken(token string) bool { return tokenPattern.MatchString(token) }

// ChallengeResponse returns the key authorization of a token of an order
// in progress here.
func (m *Manager) ChallengeResponse(token string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ka, ok := m.challenges[token]
	return ka, ok
}

// Parse checks a PEM certificate chain and its key.
func Parse(certPEM, keyPEM []byte) (*Certificate, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	return &Certificate{CertPEM: certPEM, KeyPEM: keyPEM, Names: leaf.DNSNames, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter}, nil
}

// RenewAt is when c should be renewed: with a third of its lifetime left.
func (c *Certificate) RenewAt() time.Time {
	return c.NotAfter.Add(-c.NotAfter.Sub(c.NotBefore) / 3)
}

// Covers reports whether c names exactly names (in any order).
func (c *Certificate) Covers(names []string) bool {
	a, b := slices.Clone(c.Names), slices.Clone(names)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// fileOf is where the certificate of name is kept.
func (m *Manager) fileOf(name string) string {
	return filepath.Join(m.cfg.Dir, "certs", strings.ToLower(name)+".pem")
}

// Save keeps c under name (its key in the same file, mode 0600).
func (m *Manager) Save(name string, c *Certificate) error {
	return writeFile(m.fileOf(name), append(slices.Clone(c.CertPEM), c.KeyPEM...))
}

// Load returns the certificate kept under name, or an error wrapping
// os.ErrNotExist.
func (m *Manager) Load(name string) (*Certificate, error) {
	b, err := os.ReadFile(m.fileOf(name))
	if err != nil {
		return nil, err
	}
	var certPEM, keyPEM []byte
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			certPEM = append(certPEM, pem.EncodeToMemory(blk)...)
		} else {
			keyPEM = pem.EncodeToMemory(blk)
		}
	}
	return Parse(certPEM, keyPEM)
}
