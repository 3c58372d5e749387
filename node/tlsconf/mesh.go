package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// MeshFiles names the files of a node's mesh identity: the cluster CA's
// certificate, and the node's certificate and key (from meshcdn ca issue).
type MeshFiles struct {
	CAFile, CertFile, KeyFile string
}

// Mesh is a node's identity for mutual TLS between peers: its certificate,
// and the cluster CA that every peer's certificate must chain to. Reload
// reads the files again, so certificates rotate without a restart. Its
// methods are safe for concurrent use.
type Mesh struct {
	files MeshFiles
	name  string // the member name the node's certificate carries

	mu    sync.Mutex // serialises Reload
	cert  atomic.Pointer[tls.Certificate]
	roots atomic.Pointer[x509.CertPool]
}

// LoadMesh reads a node's mesh identity and checks it: the certificate
// chains to the CA, names a member (the node's name, when name is not
// empty), serves as client and server, and has not expired.
func LoadMesh(files MeshFiles, name string) (*Mesh, error) {
	m := &Mesh{files: files}
	if err := m.load(name); err != nil {
		return nil, err
	}
	return m, nil
}

// Reload reads the files again and swaps them in when they are valid; on
// an error the identity in use stays.
func (m *Mesh) Reload() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.load(m.name)
}

func (m *Mesh) load(name string) error {
	caPEM, err := os.ReadFile(m.files.CAFile)
	if err != nil {
		return fmt.Errorf("mesh CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("mesh CA %s: no PEM certificate", m.files.CAFile)
	}
	cert, err := tls.LoadX509KeyPair(m.files.CertFile, m.files.KeyFile)
	if err != nil {
		return fmt.Errorf("mesh certificate: %w", err)
	}
	leaf := cert.Leaf
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("mesh certificate %s: %w", m.files.CertFile, err)
	}
	got, ok := MemberName(leaf)
	switch {
	case !ok:
		return fmt.Errorf("mesh certificate %s names no member (issue it with meshcdn ca issue)", m.files.CertFile)
	case name != "" && got != name:
		return fmt.Errorf("mesh certificate %s is for member %q, not %q", m.files.CertFile, got, name)
	}
	m.name = got
	m.cert.Store(&cert)
	m.roots.Store(roots)
	return nil
}

// ServerConfig is the peer listener's TLS: TLS 1.3, and only clients with
// a certificate of the cluster CA.
func (m *Mesh) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAnyClientCert, // verified below, against the CA in force
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return m.cert.Load(), nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := m.verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// ClientConfig is the TLS of a connection to the peer that should be
// member: the server must show a certificate of the cluster CA naming it.
func (m *Mesh) ClientConfig(member string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The chain and the member name are checked in VerifyConnection:
		// a member's name is no DNS name for the standard check.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return m.cert.Load(), nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			got, err := m.verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if got != member {
				return fmt.Errorf("%w: the peer is %q, not %q", ErrNotMember, got, member)
			}
			return nil
		},
	}
}

// ErrNotMember is a peer whose certificate does not chain to the cluster
// CA or does not name the expected member.
var ErrNotMember = errors.New("not a member of this cluster")

// verify checks a peer's chain against the CA in force and returns the
// member it names.
func (m *Mesh) verify(chain []*x509.Certificate, usage x509.ExtKeyUsage) (string, error) {
	if len(chain) == 0 {
		return "", fmt.Errorf("%w: no certificate", ErrNotMember)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: m.roots.Load(), Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: time.Now()}); err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotMember, err)
	}
	name, ok := MemberName(chain[0])
	if !ok {
		return "", fmt.Errorf("%w: the certificate names no member", ErrNotMember)
	}
	return name, nil
}

// PeerName returns the member name of a verified peer's certificate chain.
func PeerName(cs tls.ConnectionState) (string, bool) {
	if len(cs.PeerCertificates) == 0 {
		return "", false
	}
	return MemberName(cs.PeerCertificates[0])
}
