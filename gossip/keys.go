package gossip

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Gossip keys are written as base64, and a key file holds one per line:
// the first is used to send, all are accepted. Rotating a key takes three
// rolling restarts, each after one step on the file: AddKey (every node
// accepts the new key), UseNewestKey (every node sends with it), and
// RetireKeys (the old key is dropped).

// KeySize is the size of the keys NewKey makes: AES-256.
const KeySize = 32

// NewKey returns a new random key, base64-encoded.
func NewKey() string {
	b := make([]byte, KeySize)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.StdEncoding.EncodeToString(b)
}

// ParseKeys reads keys written as base64, separated by commas. Empty: none.
func ParseKeys(s string) ([][]byte, error) {
	var keys [][]byte
	for i, k := range strings.Split(s, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return nil, fmt.Errorf("key %d: not base64: %v", i+1, err)
		}
		if n := len(b); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("key %d is %d bytes; want 16, 24 or 32", i+1, n)
		}
		keys = append(keys, b)
	}
	return keys, nil
}

// ReadKeyFile reads the keys of a key file: base64, one per line (or
// separated by commas); blank lines and lines starting with # are skipped.
// It must hold at least one key.
func ReadKeyFile(path string) ([][]byte, error) {
	lines, err := keyLines(path)
	if err != nil {
		return nil, err
	}
	keys, err := ParseKeys(strings.Join(lines, ","))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s holds no key", path)
	}
	return keys, nil
}

// CreateKeyFile writes a key file with one new key (mode 0600). It never
// overwrites: an existing file is an error wrapping os.ErrExist.
func CreateKeyFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(keyFileHeader + NewKey() + "\n"); err != nil {
		f.Close()
		_ = os.Remove(path)
		return err
	}
	return f.Close()
}

// AddKey appends a new key to a key file: accepted by the nodes started
// with the file from now on, not yet used to send.
func AddKey(path string) error {
	return rewrite(path, func(keys []string) ([]string, error) { return append(keys, NewKey()), nil })
}

// UseNewestKey moves the last key of a key file first: the nodes started
// with the file from now on send with it.
func UseNewestKey(path string) error {
	return rewrite(path, func(keys []string) ([]string, error) {
		if len(keys) < 2 {
			return nil, errors.New("one key only: add one first")
		}
		last := keys[len(keys)-1]
		return append([]string{last}, keys[:len(keys)-1]...), nil
	})
}

// RetireKeys keeps only the first key of a key file, the one in use.
func RetireKeys(path string) error {
	return rewrite(path, func(keys []string) ([]string, error) { return keys[:1], nil })
}

const keyFileHeader = "# meshcdn gossip keys, base64, one per line: the first sends, all are accepted.\n"

// keyLines returns the key lines of a key file.
func keyLines(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for line := range strings.Lines(string(b)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			for k := range strings.SplitSeq(line, ",") {
				if k = strings.TrimSpace(k); k != "" {
					out = append(out, k)
				}
			}
		}
	}
	return out, nil
}

// rewrite replaces a valid key file's keys with change's, atomically.
func rewrite(path string, change func([]string) ([]string, error)) error {
	if _, err := ReadKeyFile(path); err != nil {
		return err
	}
	keys, err := keyLines(path)
	if err != nil {
		return err
	}
	if keys, err = change(keys); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".gossip-key-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(keyFileHeader + strings.Join(keys, "\n") + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
