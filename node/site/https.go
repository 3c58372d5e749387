package site

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshcdn/meshcdn/internal/units"
)

// CertificateConfig names one of a site's certificates: a PEM file with the
// certificate (then its chain) and the PEM file of its private key.
type CertificateConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// HSTSConfig is the Strict-Transport-Security a site sends on HTTPS.
type HSTSConfig struct {
	// MaxAge is how long browsers keep to HTTPS for the site.
	MaxAge units.Duration `yaml:"max_age"`
	// IncludeSubdomains extends it to every subdomain.
	IncludeSubdomains bool `yaml:"include_subdomains"`
	// Preload asks to be in the browsers' preload lists; it needs a MaxAge of
	// a year or more and IncludeSubdomains.
	Preload bool `yaml:"preload"`
}

// UnmarshalYAML accepts a duration alone ("hsts: 180d") as well as a
// mapping.
func (h *HSTSConfig) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		return n.Decode(&h.MaxAge)
	}
	type plain HSTSConfig
	return n.Decode((*plain)(h))
}

// HTTPSPolicy is what a site does with a request that came over cleartext
// HTTP.
type HTTPSPolicy int

// HTTPS policies.
const (
	// HTTPSAllow serves both schemes.
	HTTPSAllow HTTPSPolicy = iota
	// HTTPSRedirect answers 308 to the same URL on https.
	HTTPSRedirect
	// HTTPSOnly answers 403.
	HTTPSOnly
)

func (p HTTPSPolicy) String() string {
	switch p {
	case HTTPSRedirect:
		return "redirect"
	case HTTPSOnly:
		return "only"
	default:
		return "allow"
	}
}

// minPreload is the shortest max-age the HSTS preload lists accept.
const minPreload = 365 * 24 * time.Hour

// compileHTTPS checks and sets the site's HTTPS settings.
func (c Config) compileHTTPS(s *Site, fail func(field, format string, a ...any)) {
	for i, cc := range c.Certificates {
		if cc.CertFile == "" || cc.KeyFile == "" {
			fail(fmt.Sprintf("certificates[%d]", i), "cert_file and key_file are both required")
			continue
		}
		s.Certificates = append(s.Certificates, cc)
	}
	switch strings.ToLower(c.HTTPS) {
	case "", "allow":
		s.HTTPS = HTTPSAllow
	case "redirect":
		s.HTTPS = HTTPSRedirect
	case "only":
		s.HTTPS = HTTPSOnly
	default:
		fail("https", "%q is not allow, redirect or only", c.HTTPS)
	}
	if h := c.HSTS; h != nil {
		age := time.Duration(h.MaxAge)
		switch {
		case age < 0:
			fail("hsts.max_age", "must not be negative")
		case h.Preload && (age < minPreload || !h.IncludeSubdomains):
			fail("hsts.preload", "the preload lists require a max_age of at least 365d and include_subdomains")
		default:
			s.HSTS = "max-age=" + strconv.FormatInt(int64(age/time.Second), 10)
			if h.IncludeSubdomains {
				s.HSTS += "; includeSubDomains"
			}
			if h.Preload {
				s.HSTS += "; preload"
			}
		}
	}
}
