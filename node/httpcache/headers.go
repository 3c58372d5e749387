package httpcache

import (
	"net/http"
	"strings"
)

// hopByHop are the connection-specific fields of RFC 9110 §7.6.1, never stored
// or forwarded.
var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// RemoveHopByHop deletes hop-by-hop fields from h, including those named in
// Connection.
func RemoveHopByHop(h http.Header) {
	for _, line := range h["Connection"] {
		for f := range strings.SplitSeq(line, ",") {
			if f = strings.TrimSpace(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, f := range hopByHop {
		h.Del(f)
	}
}

// StripFields deletes the fields named by qualified no-cache and private
// directives, which a shared cache must not store (RFC 9111 §5.2.2.4, §5.2.2.7).
func StripFields(h http.Header, cc Directives) {
	for _, f := range cc.NoCacheFields {
		h.Del(f)
	}
	for _, f := range cc.PrivateFields {
		h.Del(f)
	}
}

// notUpdated are fields a 304 must not replace in the stored response
// (RFC 9111 §3.2): they describe the stored content, not the new response.
var notUpdated = map[string]bool{
	"Content-Length": true, "Content-Encoding": true, "Content-Range": true,
	"Transfer-Encoding": true, "Content-Type": true,
}

// UpdateStored returns a copy of stored with the fields of a 304 response laid
// over it (RFC 9111 §4.3.4).
func UpdateStored(stored, notModified http.Header) http.Header {
	h := stored.Clone()
	for k, v := range notModified {
		if notUpdated[k] {
			continue
		}
		h[k] = v
	}
	return h
}

// NotModifiedFields are the fields a 304 carries from the stored 200
// (RFC 9110 §15.4.5).
var NotModifiedFields = []string{"Cache-Control", "Content-Location", "Date", "Etag", "Expires", "Vary", "Last-Modified"}
