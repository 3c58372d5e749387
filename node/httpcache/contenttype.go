package httpcache

import (
	"mime"
	"strings"
)

// TypeFits reports whether a response's Content-Type fits the extension of
// the path it answers (lower case, without the dot). Only document types,
// the ones a personal page comes as (HTML, XHTML, JSON, XML), can misfit:
// they fit only an extension that calls for them. So /account/x.css
// answered as text/html misfits, while a font sent as
// application/octet-stream, or a path without an extension, fits.
func TypeFits(ext, contentType string) bool {
	if ext == "" || contentType == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt, _, _ = strings.Cut(strings.ToLower(strings.TrimSpace(contentType)), ";")
		mt = strings.TrimSpace(mt)
	}
	kind := documentKind(mt)
	if kind == "" {
		return true
	}
	switch ext {
	case "html", "htm", "shtml", "xhtml":
		return kind == "html"
	case "json", "map", "webmanifest", "geojson":
		return kind == "json"
	case "xml", "rss", "atom", "svg", "xsl", "xslt":
		return kind == "xml"
	}
	return false
}

// documentKind names the document type mt is: "html", "json", "xml", or
// "" for anything else.
func documentKind(mt string) string {
	switch {
	case mt == "text/html" || mt == "application/xhtml+xml":
		return "html"
	case mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json"):
		return "json"
	case mt == "application/xml" || mt == "text/xml" || strings.HasSuffix(mt, "+xml"):
		return "xml"
	}
	return ""
}
