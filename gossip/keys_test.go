package gossip

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A key file goes through a rotation: a new key is added (accepted), made
// first (sent), and the old one retired; the file stays 0600 and readable
// at every step, and nothing is overwritten by CreateKeyFile.
func TestKeyFileRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gossip.key")
	if err := CreateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	if err := CreateKeyFile(path); !errors.Is(err, os.ErrExist) {
		t.Errorf("a second CreateKeyFile: %v; want ErrExist", err)
	}
	read := func(step string, want int) [][]byte {
		t.Helper()
		keys, err := ReadKeyFile(path)
		if err != nil || len(keys) != want {
			t.Fatalf("%s: %d keys, %v; want %d", step, len(keys), err, want)
		}
		if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", step, st.Mode())
		}
		for _, k := range keys {
			if len(k) != KeySize {
				t.Errorf("%s: a key of %d bytes", step, len(k))
			}
		}
		return keys
	}
	old := read("created", 1)[0]
	if err := UseNewestKey(path); err == nil || !strings.Contains(err.Error(), "one key only") {
		t.Errorf("use with one key: %v", err)
	}
	if err := AddKey(path); err != nil {
		t.Fatal(err)
	}
	keys := read("added", 2)
	if !bytes.Equal(keys[0], old) {
		t.Error("add changed the key that sends")
	}
	added := keys[1]
	if err := UseNewestKey(path); err != nil {
		t.Fatal(err)
	}
	if keys := read("used", 2); !bytes.Equal(keys[0], added) || !bytes.Equal(keys[1], old) {
		t.Error("use did not put the new key first and keep the old")
	}
	if err := RetireKeys(path); err != nil {
		t.Fatal(err)
	}
	if keys := read("retired", 1); !bytes.Equal(keys[0], added) {
		t.Error("retire did not keep the new key")
	}
}

func TestKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct{ path, want string }{
		{write("empty", "# nothing\n\n"), "holds no key"},
		{write("short", "c2hvcnQ=\n"), "key 1 is 5 bytes"},
		{write("garbage", NewKey()+"\nnot*base64\n"), "key 2: not base64"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		if _, err := ReadKeyFile(c.path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ReadKeyFile(%s): %v; want %q", filepath.Base(c.path), err, c.want)
		}
		before, _ := os.ReadFile(c.path)
		if err := AddKey(c.path); err == nil {
			t.Errorf("AddKey(%s) changed a broken file", filepath.Base(c.path))
		}
		if after, _ := os.ReadFile(c.path); !bytes.Equal(before, after) {
			t.Errorf("%s changed", filepath.Base(c.path))
		}
	}
}
