package httpcache

import (
	"net/http"
	"strings"
)

// HopByHop are the connection-specific fields of RFC 9110 §7.6.1, never
// stored or forwarded, by their canonical names.
var HopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// RemoveHopByHop deletes hop-by-hop fields from h, including those named in
// its Connection field.
func RemoveHopByHop(h http.Header) {
	DropHopByHop(HeaderFields(h))
}

// NotRelayed are fields of the origin's answers that speak of the origin's
// own endpoint, not of the resource: Alt-Svc (RFC 7838) would send clients
// to the origin's alternative services, past the edge, which announces its
// own.
var NotRelayed = []string{"Alt-Svc"}

// DropHopByHop is RemoveHopByHop for a header in any front's form. It drops
// NotRelayed fields as well.
func DropHopByHop(f Fields) {
	for _, name := range ConnectionOptions(f.Values("Connection")) {
		f.Del(http.CanonicalHeaderKey(name))
	}
	for _, name := range HopByHop {
		f.Del(name)
	}
	for _, name := range NotRelayed {
		f.Del(name)
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

// commonFields are the names of the fields clients and origins send most,
// canonical as net/http spells them, under the spellings seen on the wire:
// as is, lower case (HTTP/2's) and, for ETag and WWW-Authenticate, in
// their RFCs' own capitals.
var commonFields = func() map[string]string {
	m := map[string]string{}
	for _, n := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Accept-Ranges", "Age",
		"Authorization", "Cache-Control", "Cache-Status", "Connection", "Content-Disposition", "Content-Encoding",
		"Content-Language", "Content-Length", "Content-Location", "Content-Range", "Content-Security-Policy",
		"Content-Type", "Cookie", "Date", "Dnt", "Etag", "Expect", "Expires", "Host", "If-Match",
		"If-Modified-Since", "If-None-Match", "If-Range", "If-Unmodified-Since", "Keep-Alive", "Last-Modified",
		"Link", "Location", "Origin", "Pragma", "Priority", "Range", "Referer", "Referrer-Policy", "Retry-After",
		"Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-User", "Server", "Set-Cookie",
		"Strict-Transport-Security", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Upgrade-Insecure-Requests",
		"User-Agent", "Vary", "Via", "Www-Authenticate", "X-Content-Type-Options", "X-Forwarded-For",
		"X-Forwarded-Host", "X-Forwarded-Proto", "X-Frame-Options"} {
		m[n], m[strings.ToLower(n)] = n, n
	}
	m["ETag"], m["WWW-Authenticate"] = "Etag", "Www-Authenticate"
	return m
}()

// FieldName is the canonical name (net/http's) of a field name read off
// the wire; the common ones cost no allocation.
func FieldName(k []byte) string {
	if n, ok := commonFields[string(k)]; ok {
		return n
	}
	return http.CanonicalHeaderKey(string(k))
}

// Fields is a header in the form a front keeps it (net/http's, fasthttp's),
// as the pipeline edits a response's on its way through. Names are
// canonical.
type Fields interface {
	Has(name string) bool
	Get(name string) string
	Values(name string) []string
	Set(name, value string)
	Add(name, value string)
	Del(name string)
}

// HeaderFields is net/http's header as Fields.
type HeaderFields http.Header

func (h HeaderFields) Has(name string) bool {
	_, ok := h[name]
	return ok
}
func (h HeaderFields) Get(name string) string      { return http.Header(h).Get(name) }
func (h HeaderFields) Values(name string) []string { return h[name] }
func (h HeaderFields) Set(name, value string)      { h[name] = []string{value} }
func (h HeaderFields) Add(name, value string)      { h[name] = append(h[name], value) }
func (h HeaderFields) Del(name string)             { delete(h, name) }

// ConnectionOptions are the fields the values of a Connection field name,
// to be dropped with it (RFC 9110 §7.6.1): all but close and keep-alive,
// which say what becomes of the connection.
func ConnectionOptions(values []string) []string {
	var names []string
	for _, v := range values {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" && !strings.EqualFold(f, "close") && !strings.EqualFold(f, "keep-alive") {
				names = append(names, f)
			}
		}
	}
	return names
}

// HasToken reports whether a comma-separated list field with values holds
// token, in any case.
func HasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// ByteHeader is the method set fasthttp's request and response headers
// share, as ByteFields uses it.
type ByteHeader interface {
	Peek(name string) []byte
	PeekAll(name string) [][]byte
	Set(name, value string)
	Add(name, value string)
	Del(name string)
}

// ByteFields is a header that keeps its fields as bytes (fasthttp's) as
// Fields.
type ByteFields[H ByteHeader] struct{ H H }

func (f ByteFields[H]) Has(name string) bool   { return f.H.Peek(name) != nil }
func (f ByteFields[H]) Get(name string) string { return string(f.H.Peek(name)) }
func (f ByteFields[H]) Values(name string) []string {
	all := f.H.PeekAll(name)
	if len(all) == 0 {
		return nil
	}
	vs := make([]string, len(all))
	for i, v := range all {
		vs[i] = string(v)
	}
	return vs
}
func (f ByteFields[H]) Set(name, value string) { f.H.Set(name, value) }
func (f ByteFields[H]) Add(name, value string) { f.H.Add(name, value) }
func (f ByteFields[H]) Del(name string)        { f.H.Del(name) }
