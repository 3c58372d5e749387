package access

import (
	"crypto/md5"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/meshcdn/meshcdn/internal/units"
)

// URLAuthConfig is a site's URL signing, in one of Alibaba Cloud CDN's
// formats, so URLs an application already signs for it stay valid.
type URLAuthConfig struct {
	// Type is A, B, C or F.
	Type string `yaml:"type"`
	// Key is the private key; BackupKey, when set, is accepted too (for a
	// key rotation).
	Key       string `yaml:"key"`
	BackupKey string `yaml:"backup_key"`
	// TTL is how long after its timestamp a signed URL is valid. Default 30m.
	TTL units.Duration `yaml:"ttl"`
	// Param names the signature's query parameter: A's (default auth_key),
	// F's (default sign), and C's when C signs in the query (with
	// TimeParam) instead of the path.
	Param string `yaml:"param"`
	// TimeParam names the timestamp's query parameter: F's (default time)
	// and C's query form.
	TimeParam string `yaml:"time_param"`
	// TimeFormat is F's timestamp: "decimal" (default) or "hex" Unix seconds.
	TimeFormat string `yaml:"time_format"`
}

// DefaultURLAuthTTL is a signed URL's validity when the site sets none.
const DefaultURLAuthTTL = 30 * time.Minute

// utc8 is the zone of type B's timestamps.
var utc8 = time.FixedZone("UTC+8", 8*3600)

// Why a request is refused: the detail of its Cache-Status.
const (
	AuthMissing  = "auth-missing"
	AuthExpired  = "auth-expired"
	AuthMismatch = "auth-mismatch"
	// AuthDuplicate refuses a URL that carries a signing parameter twice:
	// only one can be checked, and the other would reach the cache key and
	// the origin, so one signature would open any number of entries.
	AuthDuplicate = "auth-duplicate"
)

// urlAuth is a compiled URLAuthConfig.
type urlAuth struct {
	typ                   byte
	keys                  [][]byte
	ttl                   time.Duration
	param, timeParam      string
	hexTime, queryFormOfC bool
}

func (c URLAuthConfig) compile() (*urlAuth, error) {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("url_auth.%s: %s", field, fmt.Sprintf(format, a...)))
	}
	a := &urlAuth{ttl: time.Duration(c.TTL), param: c.Param, timeParam: c.TimeParam}
	switch t := strings.ToUpper(c.Type); t {
	case "A", "B", "C", "F":
		a.typ = t[0]
	default:
		bad("type", "%q is not A, B, C or F", c.Type)
	}
	for field, k := range map[string]string{"key": c.Key, "backup_key": c.BackupKey} {
		switch {
		case k == "" && field == "key":
			bad(field, "required")
		case k == "":
		case len(k) < 6 || len(k) > 128:
			bad(field, "%d characters; want 6 to 128 (Alibaba Cloud CDN takes 16 to 32 letters and digits)", len(k))
		}
	}
	a.keys = append(a.keys, []byte(c.Key))
	if c.BackupKey != "" {
		a.keys = append(a.keys, []byte(c.BackupKey))
	}
	if a.ttl == 0 {
		a.ttl = DefaultURLAuthTTL
	}
	if a.ttl < 0 || a.ttl > 366*24*time.Hour {
		bad("ttl", "%v is not between 1s and a year", time.Duration(c.TTL))
	}
	switch a.typ {
	case 'A':
		if a.param == "" {
			a.param = "auth_key"
		}
		if c.TimeParam != "" {
			bad("time_param", "type A carries its time in param")
		}
	case 'B':
		if c.Param != "" || c.TimeParam != "" {
			bad("param", "type B signs in the path: no parameter")
		}
	case 'C':
		a.queryFormOfC = c.Param != "" || c.TimeParam != ""
		if a.queryFormOfC && (c.Param == "" || c.TimeParam == "" || c.Param == c.TimeParam) {
			bad("param", "type C in the query needs param and time_param, two names")
		}
	case 'F':
		if a.param == "" {
			a.param = "sign"
		}
		if a.timeParam == "" {
			a.timeParam = "time"
		}
		if a.param == a.timeParam {
			bad("time_param", "%q is also param", a.timeParam)
		}
	}
	switch c.TimeFormat {
	case "", "decimal":
	case "hex":
		a.hexTime = true
		if a.typ != 'F' {
			bad("time_format", "only type F takes a time format")
		}
	default:
		bad("time_format", "%q is not decimal or hex", c.TimeFormat)
	}
	return a, errors.Join(errs...)
}

// check verifies a request's signature. It returns the path and query
// without the signing parts, or why the request is refused.
func (a *urlAuth) check(path, rawQuery string, now time.Time) (cleanPath, cleanQuery, reason string) {
	switch a.typ {
	case 'A':
		v, rest, why := takeParam(rawQuery, a.param)
		if why != "" {
			return "", "", why
		}
		parts := strings.Split(v, "-")
		if len(parts) != 4 {
			return "", "", AuthMismatch
		}
		ts, err := strconv.ParseInt(parts[0], 10, 64)
		if err != nil {
			return "", "", AuthMismatch
		}
		return a.verify(parts[3], time.Unix(ts, 0), now, false, path, rest, path, "-", parts[0], "-", parts[1], "-", parts[2], "-")
	case 'B':
		// /YYYYMMDDHHMM/md5hash/path
		ts, hash, rest, ok := splitSigned(path, 12)
		if !ok {
			return "", "", AuthMissing
		}
		at, err := time.ParseInLocation("200601021504", ts, utc8)
		if err != nil {
			return "", "", AuthMismatch
		}
		return a.verify(hash, at, now, true, rest, rawQuery, ts, rest)
	case 'C':
		if a.queryFormOfC {
			hash, hexTS, q2, why := takeParams(rawQuery, a.param, a.timeParam)
			if why != "" {
				return "", "", why
			}
			return a.verifyHex(hash, hexTS, path, q2, now)
		}
		// /md5hash/hextimestamp/path
		hash, hexTS, rest, ok := splitSignedC(path)
		if !ok {
			return "", "", AuthMissing
		}
		return a.verifyHex(hash, hexTS, rest, rawQuery, now)
	default: // 'F'
		hash, ts, q2, why := takeParams(rawQuery, a.param, a.timeParam)
		if why != "" {
			return "", "", why
		}
		base := 10
		if a.hexTime {
			base = 16
		}
		n, err := strconv.ParseInt(ts, base, 64)
		if err != nil {
			return "", "", AuthMismatch
		}
		return a.verify(hash, time.Unix(n, 0), now, true, path, q2, path, ts)
	}
}

// verifyHex checks type C's hash over path and its hexadecimal timestamp.
func (a *urlAuth) verifyHex(hash, hexTS, path, rest string, now time.Time) (string, string, string) {
	n, err := strconv.ParseInt(hexTS, 16, 64)
	if err != nil {
		return "", "", AuthMismatch
	}
	return a.verify(hash, time.Unix(n, 0), now, true, path, rest, path, hexTS)
}

// verify compares hash with the MD5 of what each key signs (in constant
// time): the key, then pieces, or pieces then the key; then the time: a URL
// past signedAt + TTL is expired. path and rawQuery are what it returns when
// both hold.
func (a *urlAuth) verify(hash string, signedAt, now time.Time, keyFirst bool, path, rawQuery string, pieces ...string) (string, string, string) {
	if len(hash) != 32 {
		return "", "", AuthMismatch
	}
	var got [32]byte
	for i := range 32 {
		c := hash[i]
		if 'A' <= c && c <= 'F' {
			c += 'a' - 'A'
		}
		got[i] = c
	}
	match := false
	var buf [512]byte
	for _, k := range a.keys {
		b := buf[:0]
		if keyFirst {
			b = append(b, k...)
		}
		for _, p := range pieces {
			b = append(b, p...)
		}
		if !keyFirst {
			b = append(b, k...)
		}
		sum := md5.Sum(b)
		var want [32]byte
		hex.Encode(want[:], sum[:])
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
			match = true
		}
	}
	if !match {
		return "", "", AuthMismatch
	}
	if now.After(signedAt.Add(a.ttl)) {
		return "", "", AuthExpired
	}
	return path, rawQuery, ""
}

// takeParam finds the parameter name in a raw query and returns its value
// (unescaped) and the query without it. A parameter whose name unescapes
// to name counts as name (origins decode names), and a query that holds it
// more than once is refused (reason AuthDuplicate).
func takeParam(rawQuery, name string) (value, rest, reason string) {
	if rawQuery == "" {
		return "", "", AuthMissing
	}
	parts := strings.Split(rawQuery, "&")
	found := -1
	for i, p := range parts {
		k, v, _ := strings.Cut(p, "=")
		if k != name {
			if uk, err := url.QueryUnescape(k); err != nil || uk != name {
				continue
			}
		}
		if found >= 0 {
			return "", "", AuthDuplicate
		}
		uv, err := url.QueryUnescape(v)
		if err != nil {
			return "", "", AuthMismatch
		}
		found, value = i, uv
	}
	if found < 0 {
		return "", "", AuthMissing
	}
	return value, strings.Join(append(parts[:found:found], parts[found+1:]...), "&"), ""
}

// takeParams takes the hash and time parameters of the query forms of C
// and F. Of two reasons to refuse, a duplicate parameter is named first,
// then a missing one.
func takeParams(rawQuery, hashParam, timeParam string) (hash, ts, rest, reason string) {
	hash, q1, why1 := takeParam(rawQuery, hashParam)
	if why1 != "" {
		q1 = rawQuery // the time parameter is still looked at, for its reason
	}
	ts, rest, why2 := takeParam(q1, timeParam)
	for _, r := range []string{AuthDuplicate, AuthMissing} {
		if why1 == r || why2 == r {
			return "", "", "", r
		}
	}
	if why1 != "" || why2 != "" {
		return "", "", "", AuthMismatch
	}
	return hash, ts, rest, ""
}

// splitSigned splits type B's /TIMESTAMP/HASH/rest, the timestamp of n
// digits.
func splitSigned(path string, n int) (ts, hash, rest string, ok bool) {
	if len(path) < 1+n+1+32+1 || path[0] != '/' || path[1+n] != '/' || path[1+n+1+32] != '/' {
		return "", "", "", false
	}
	ts, hash, rest = path[1:1+n], path[2+n:2+n+32], path[2+n+32:]
	if !digits(ts) || !isHex(hash) {
		return "", "", "", false
	}
	return ts, hash, rest, true
}

// splitSignedC splits type C's /HASH/HEXTIME/rest.
func splitSignedC(path string) (hash, hexTS, rest string, ok bool) {
	if len(path) < 1+32+1 || path[0] != '/' || path[33] != '/' {
		return "", "", "", false
	}
	hash = path[1:33]
	hexTS, tail, found := strings.Cut(path[34:], "/")
	if !found || !isHex(hash) || hexTS == "" || len(hexTS) > 16 || !isHex(hexTS) {
		return "", "", "", false
	}
	return hash, hexTS, "/" + tail, true
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// Sign returns u signed with c's key as c's type would have it, at time
// at: what `meshcdn sign` prints. rand and uid are type A's (uid default
// "0").
func Sign(c URLAuthConfig, u *url.URL, at time.Time, rand, uid string) (*url.URL, error) {
	a, err := c.compile()
	if err != nil {
		return nil, err
	}
	key := c.Key
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	md := func(s string) string {
		sum := md5.Sum([]byte(s))
		return hex.EncodeToString(sum[:])
	}
	out := *u
	addQuery := func(pairs ...string) {
		q := out.RawQuery
		for i := 0; i+1 < len(pairs); i += 2 {
			if q != "" {
				q += "&"
			}
			q += pairs[i] + "=" + url.QueryEscape(pairs[i+1])
		}
		out.RawQuery = q
	}
	setPath := func(p string) error {
		dec, err := url.PathUnescape(p)
		if err != nil {
			return err
		}
		out.Path, out.RawPath = dec, p
		return nil
	}
	switch a.typ {
	case 'A':
		if uid == "" {
			uid = "0"
		}
		if strings.Contains(rand, "-") || strings.Contains(uid, "-") {
			return nil, errors.New("rand and uid may not contain '-'")
		}
		ts := strconv.FormatInt(at.Unix(), 10)
		addQuery(a.param, ts+"-"+rand+"-"+uid+"-"+md(path+"-"+ts+"-"+rand+"-"+uid+"-"+key))
	case 'B':
		ts := at.In(utc8).Format("200601021504")
		if err := setPath("/" + ts + "/" + md(key+ts+path) + path); err != nil {
			return nil, err
		}
	case 'C':
		ts := strings.ToUpper(strconv.FormatInt(at.Unix(), 16))
		hash := md(key + path + ts)
		if a.queryFormOfC {
			addQuery(a.param, hash, a.timeParam, ts)
		} else if err := setPath("/" + hash + "/" + ts + path); err != nil {
			return nil, err
		}
	case 'F':
		ts := strconv.FormatInt(at.Unix(), 10)
		if a.hexTime {
			ts = strconv.FormatInt(at.Unix(), 16)
		}
		addQuery(a.param, md(key+path+ts), a.timeParam, ts)
	}
	return &out, nil
}
