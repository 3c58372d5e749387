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
// certificate (or a bundle of CA certificates, while a CA rotates), and
// either the node's certificate and key (from meshcdn ca issue) or the
// CA's key, with which the node issues its own certificate.
type MeshFiles struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CAKeyFile, instead of CertFile and KeyFile, makes the node sign its
	// own certificate, in memory, for its name: for nodes whose names are
	// not known in advance (replicas of a scaled service). Every node that
	// holds the CA key can make members.
	CAKeyFile string `yaml:"ca_key_file"`
}

// Check reports what is missing from files; zero files are no mesh TLS.
func (f MeshFiles) Check() error {
	switch {
	case f == MeshFiles{}:
		return nil
	case f.CAFile == "":
		return errors.New("ca_file is required (meshcdn ca init makes it)")
	case f.CAKeyFile != "" && (f.CertFile != "" || f.KeyFile != ""):
		return errors.New("ca_key_file (the node signs its own certificate) excludes cert_file and key_file")
	case f.CAKeyFile == "" && (f.CertFile == "" || f.KeyFile == ""):
		return errors.New("cert_file and key_file go with ca_file (meshcdn ca issue makes them), or ca_key_file for a self-signed node certificate")
	}
	return nil
}

// SelfIssuedValidity is how long a certificate a node signs for itself is
// valid; the node signs a new one when two thirds of it have passed.
const SelfIssuedValidity = 7 * 24 * time.Hour

// Mesh is a node's identity for mutual TLS between peers: its certificate,
// and the cluster CA that every peer's certificate must chain to. Reload
// reads the files again, so certificates rotate without a restart. Its
// methods are safe for concurrent use.
type Mesh struct {
	files MeshFiles
	name  string // the member name the node's certificate carries

	mu      sync.Mutex // serialises Reload; guards stamps and renewAt
	stamps  map[string]stamp
	renewAt time.Time // a self-signed certificate is signed again from then
	cert    atomic.Pointer[tls.Certificate]
	roots   atomic.Pointer[x509.CertPool]
}

// stamp is what a file looked like when it was read.
type stamp struct {
	mod  time.Time
	size int64
}

// LoadMesh reads a node's mesh identity and checks it: the certificate
// chains to the CA, names a member (the node's name, when name is not
// empty), serves as client and server, and has not expired. With a CA key
// instead of a certificate, it signs one for name, which must be given.
func LoadMesh(files MeshFiles, name string) (*Mesh, error) {
	if err := files.Check(); err != nil {
		return nil, err
	}
	if files.CAKeyFile != "" && name == "" {
		return nil, errors.New("a self-signed mesh certificate needs the node's name")
	}
	m := &Mesh{files: files, name: name}
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

// Stale reports whether Reload has something to do: one of the files
// changed since it was read, or a self-signed certificate is due for
// renewal.
func (m *Mesh) Stale() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.renewAt.IsZero() && !time.Now().Before(m.renewAt) {
		return true
	}
	for path, was := range m.stamps {
		if statOf(path) != was {
			return true
		}
	}
	return false
}

// statOf is what a file looks like now; zero when it is missing.
func statOf(path string) stamp {
	fi, err := os.Stat(path) // through symbolic links, as Kubernetes swaps them
	if err != nil {
		return stamp{}
	}
	return stamp{fi.ModTime(), fi.Size()}
}

func (m *Mesh) load(name string) error {
	// What the files look like before they are read: a change meanwhile is
	// seen next time, and a failed attempt is tried again only once a file
	// changes again.
	m.stamps = map[string]stamp{}
	for _, p := range []string{m.files.CAFile, m.files.CertFile, m.files.KeyFile, m.files.CAKeyFile} {
		if p != "" {
			m.stamps[p] = statOf(p)
		}
	}
	caPEM, err := os.ReadFile(m.files.CAFile)
	if err != nil {
		return fmt.Errorf("mesh CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("mesh CA %s: no PEM certificate", m.files.CAFile)
	}
	cert, renewAt, err := m.certificate(name)
	if err != nil {
		return err
	}
	leaf, src := cert.Leaf, m.files.CertFile
	if src == "" {
		src = "(signed with " + m.files.CAKeyFile + ")"
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("mesh certificate %s: %w", src, err)
	}
	got, ok := MemberName(leaf)
	switch {
	case !ok:
		return fmt.Errorf("mesh certificate %s names no member (issue it with meshcdn ca issue)", src)
	case name != "" && got != name:
		return fmt.Errorf("mesh certificate %s is for member %q, not %q", src, got, name)
	}
	m.name = got
	m.renewAt = renewAt
	m.cert.Store(&cert)
	m.roots.Store(roots)
	return nil
}

// certificate reads the node's certificate, or signs one for name with the
// CA key; renewAt is when a self-signed one is due for renewal.
func (m *Mesh) certificate(name string) (cert tls.Certificate, renewAt time.Time, err error) {
	if m.files.CAKeyFile == "" {
		cert, err = tls.LoadX509KeyPair(m.files.CertFile, m.files.KeyFile)
		if err != nil {
			return cert, renewAt, fmt.Errorf("mesh certificate: %w", err)
		}
		return cert, renewAt, nil
	}
	ca, caKey, err := loadSigner(m.files.CAFile, m.files.CAKeyFile)
	if err != nil {
		return cert, renewAt, fmt.Errorf("mesh CA key: %w", err)
	}
	der, key, err := sign(ca, caKey, name, RoleMember, nil, SelfIssuedValidity)
	if err != nil {
		return cert, renewAt, fmt.Errorf("mesh certificate for %s: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return cert, renewAt, err
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf.NotBefore.Add(life * 2 / 3), nil
}

// Leaf is the certificate the node proves itself with; nil if it cannot be
// parsed.
func (m *Mesh) Leaf() *x509.Certificate {
	c := m.cert.Load()
	if c == nil || len(c.Certificate) == 0 {
		return nil
	}
	if c.Leaf != nil {
		return c.Leaf
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil
	}
	return leaf
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
