// Package tlsconf holds the certificates of a meshcdn cluster. Its cluster
// CA signs certificates of three roles, and each opens only what its role
// allows:
//   - member: a node's certificate. Its name travels in a URI subject
//     alternative name (urn:meshcdn:member:NAME) that peers check, its
//     hosts and IPs in further SANs, and it serves both as client and as
//     server, so one file pair gives a node mutual TLS with every peer.
//   - admin: an operator's client certificate for the admin API
//     (urn:meshcdn:admin:NAME, client authentication only).
//   - server: a certificate for HTTPS (server authentication only, its
//     hosts as SANs, no meshcdn name).
//
// Everything here uses the standard library's crypto: ECDSA P-256 keys,
// PEM files, keys written with mode 0600.
package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Files of a CA directory.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
)

// Default validities: the CA's, and a node certificate's. Rotate node
// certificates well before they expire (see the README's Security section).
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultNodeValidity = 365 * 24 * time.Hour
)

// memberPrefix leads the URI SAN that names a member, adminPrefix the one
// that names an operator.
const (
	memberPrefix = "urn:meshcdn:member:"
	adminPrefix  = "urn:meshcdn:admin:"
)

// Role is what a certificate of the cluster CA is for.
type Role string

// Roles.
const (
	// RoleMember is a node of the mesh: the peer port accepts it, for a
	// current member of that name.
	RoleMember Role = "member"
	// RoleAdmin is an operator: the admin port accepts it when its client
	// CA is the cluster CA.
	RoleAdmin Role = "admin"
	// RoleServer is an HTTPS server's certificate: it opens nothing.
	RoleServer Role = "server"
)

// ParseRole reads a role's name.
func ParseRole(s string) (Role, error) {
	switch r := Role(strings.ToLower(strings.TrimSpace(s))); r {
	case RoleMember, RoleAdmin, RoleServer:
		return r, nil
	}
	return "", fmt.Errorf("role %q: want member, admin or server", s)
}

// ErrExists is returned when a file to be written is already there: keys
// are never overwritten.
var ErrExists = errors.New("already exists")

// validName is what a member name may be: a host name or a container id.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)

// InitCA creates a cluster CA in dir (created if needed): ca.pem and
// ca-key.pem, valid for validity (0: DefaultCAValidity). It refuses to
// overwrite an existing CA.
func InitCA(dir string, validity time.Duration) error {
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	if err := absent(certPath, keyPath); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "meshcdn cluster CA", Organization: []string{"meshcdn"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writePair(certPath, keyPath, der, key)
}

// Issue signs a certificate of role for name with the CA in dir, for the
// given hosts (DNS names or IP addresses; besides the name), valid for
// validity (0: DefaultNodeValidity), and writes NAME.pem and NAME-key.pem
// there. It returns the certificate's path. It refuses to overwrite.
func Issue(dir, name string, role Role, hosts []string, validity time.Duration) (string, error) {
	if !validName.MatchString(name) {
		return "", fmt.Errorf("name %q: want letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	if _, err := ParseRole(string(role)); err != nil {
		return "", err
	}
	ca, caKey, err := LoadCA(dir)
	if err != nil {
		return "", err
	}
	certPath, keyPath := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := absent(certPath, keyPath); err != nil {
		return "", err
	}
	der, key, err := sign(ca, caKey, name, role, hosts, validity)
	if err != nil {
		return "", err
	}
	return certPath, writePair(certPath, keyPath, der, key)
}

// sign makes a key and a certificate of role for name signed by ca, valid
// for validity (0: DefaultNodeValidity) but never past the CA.
func sign(ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, role Role, hosts []string, validity time.Duration) ([]byte, *ecdsa.PrivateKey, error) {
	if !validName.MatchString(name) {
		return nil, nil, fmt.Errorf("name %q: want letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	if validity <= 0 {
		validity = DefaultNodeValidity
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"meshcdn"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	switch role {
	case RoleMember:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.URIs = []*url.URL{roleURI(memberPrefix, name)}
	case RoleAdmin:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.URIs = []*url.URL{roleURI(adminPrefix, name)}
		if len(hosts) > 0 {
			return nil, nil, errors.New("an admin certificate is a client's: it takes no hosts")
		}
	case RoleServer:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		if len(hosts) == 0 {
			return nil, nil, errors.New("a server certificate needs the hosts it serves (--host)")
		}
	default:
		return nil, nil, fmt.Errorf("role %q: want member, admin or server", role)
	}
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter // a certificate never outlives its CA
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		switch ip := net.ParseIP(h); {
		case h == "":
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		case validName.MatchString(strings.TrimPrefix(h, "*.")):
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		default:
			return nil, nil, fmt.Errorf("host %q: not a DNS name or an IP address", h)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	return der, key, nil
}

// Issued checks that dir holds a certificate for name that Issue could
// have written: a certificate and key that match, signed by dir's CA and
// valid now.
func Issued(dir, name string) error {
	ca, _, err := LoadCA(dir)
	if err != nil {
		return err
	}
	kp, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
	if err != nil {
		return err
	}
	leaf := kp.Leaf
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		return fmt.Errorf("%s.pem is not signed by the CA in %s: %w", name, dir, err)
	}
	if now := time.Now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("%s.pem is valid from %s to %s, not now", name, leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339))
	}
	return nil
}

// LoadCA reads the CA certificate and key of dir.
func LoadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if _, err := os.Stat(filepath.Join(dir, CAFile)); err != nil {
		return nil, nil, fmt.Errorf("no cluster CA in %s (meshcdn ca init --dir %s creates one): %w", dir, dir, err)
	}
	return loadSigner(filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile))
}

// loadSigner reads a CA key and, from certFile (one CA certificate or a
// bundle of them, as during a rotation), the certificate that matches it.
func loadSigner(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	found := false
	for rest := certPEM; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		found = true
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", certFile, err)
		}
		if key.PublicKey.Equal(cert.PublicKey) {
			if !cert.IsCA {
				return nil, nil, fmt.Errorf("%s: the certificate of %s is no CA", certFile, keyFile)
			}
			return cert, key, nil
		}
	}
	if !found {
		return nil, nil, fmt.Errorf("%s: no PEM certificate", certFile)
	}
	return nil, nil, fmt.Errorf("%s does not match any certificate of %s", filepath.Base(keyFile), filepath.Base(certFile))
}

// MemberName returns the member name a certificate was issued for, from its
// URI SAN; ok is false for a certificate that names no member.
func MemberName(c *x509.Certificate) (string, bool) { return roleName(c, memberPrefix) }

// AdminName returns the operator an admin certificate was issued for; ok
// is false for a certificate of another role.
func AdminName(c *x509.Certificate) (string, bool) { return roleName(c, adminPrefix) }

func roleName(c *x509.Certificate, prefix string) (string, bool) {
	for _, u := range c.URIs {
		if name, ok := strings.CutPrefix(u.String(), prefix); ok && validName.MatchString(name) {
			return name, true
		}
	}
	return "", false
}

func roleURI(prefix, name string) *url.URL {
	u, _ := url.Parse(prefix + name) // name is checked by the caller
	return u
}

// parseKey reads an ECDSA private key, SEC 1 or PKCS #8, from PEM.
func parseKey(b []byte) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	switch {
	case blk == nil:
		return nil, errors.New("no PEM key")
	case blk.Type == "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(blk.Bytes)
	case blk.Type == "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, err
		}
		if ek, ok := k.(*ecdsa.PrivateKey); ok {
			return ek, nil
		}
		return nil, fmt.Errorf("a %T, not an ECDSA key", k)
	}
	return nil, fmt.Errorf("no PEM key (a %q block)", blk.Type)
}

func parseCert(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// absent fails with ErrExists when any of paths exists.
func absent(paths ...string) error {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s: %w", p, ErrExists)
		}
	}
	return nil
}

// writePair writes a certificate (0644) and its key (0600), never over an
// existing file.
func writePair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	if err := writeNew(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		_ = os.Remove(keyPath)
		return err
	}
	return nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s: %w", path, ErrExists)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		_ = os.Remove(path)
		return err
	}
	return f.Close()
}
