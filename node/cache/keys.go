package cache

import "strings"

// CodingKey is the key a compressed variant of key, which the edge made in
// coding, is stored under. Request keys never hold a NUL byte (net/http
// refuses control characters in a request target), so the two never meet.
func CodingKey(key, coding string) string { return key + "\x00" + coding }

// BaseKey is the key a CodingKey was made from; any other key itself.
func BaseKey(key string) string {
	if i := strings.IndexByte(key, 0); i >= 0 {
		return key[:i]
	}
	return key
}
