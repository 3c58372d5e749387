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

// OriginProtocol is the scheme a site's origins are asked with.
type OriginProtocol int

// Origin protocols.
const (
	// OriginAsConfigured uses each origin URL's own scheme.
	OriginAsConfigured OriginProtocol = iota
	// OriginHTTP asks every origin over http.
	OriginHTTP
	// OriginHTTPS asks every origin over https.
	OriginHTTPS
	// OriginFollow asks over the scheme the client used.
	OriginFollow
)

func (p OriginProtocol) String() string {
	switch p {
	case OriginHTTP:
		return "http"
	case OriginHTTPS:
		return "https"
	case OriginFollow:
		return "follow"
	default:
		return "as-configured"
	}
}

// OriginsFor returns the site's origins as a client that used scheme asks
// them: each URL's own scheme, or the one origin_protocol sets.
func (s *Site) OriginsFor(scheme string) []Origin {
	want := ""
	switch s.OriginProtocol {
	case OriginHTTP:
		want = "http"
	case OriginHTTPS:
		want = "https"
	case OriginFollow:
		want = scheme
	}
	if want == "" {
		return s.Origins
	}
	out := make([]Origin, len(s.Origins))
	for i, o := range s.Origins {
		u := *o.URL
		u.Scheme = want
		o.URL = &u
		out[i] = o
	}
	return out
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
	switch strings.ToLower(c.OriginProtocol) {
	case "":
	case "http":
		s.OriginProtocol = OriginHTTP
	case "https":
		s.OriginProtocol = OriginHTTPS
	case "follow":
		s.OriginProtocol = OriginFollow
		for i, o := range s.Origins {
			if o.URL.Port() != "" {
				fail(fmt.Sprintf("origins[%d]", i), "%s names port %s, but origin_protocol: follow asks port 80 over http and 443 over https: give the origin without a port", o.URL, o.URL.Port())
			}
		}
	default:
		fail("origin_protocol", "%q is not http, https or follow", c.OriginProtocol)
	}
	if c.ACME {
		s.ACME = true
		for i, h := range s.Hosts {
			if strings.HasPrefix(h, "*.") {
				fail(fmt.Sprintf("hosts[%d]", i), "%q: acme obtains certificates with the HTTP-01 challenge, which cannot prove a wildcard name; give the names, or a certificate file", h)
			}
		}
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
