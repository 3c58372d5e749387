package cache

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func openDisk(t *testing.T, dir string, max int64) *Disk {
	t.Helper()
	d, err := OpenDisk(dir, max, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return d
}

func diskEntry(body string, varyKey string) *Entry {
	return &Entry{Status: 200, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte(body),
		Size: int64(len(body)), VaryKey: varyKey, ResponseTime: time.Unix(1700000000, 0).UTC(), TTL: time.Hour,
		Fetched: time.Unix(1699999000, 0).UTC(),
		ETag:    `"e"`, StaleWhileRevalidate: -1, StaleIfError: -1}
}

// TestDiskSurvivesRestart: what one Disk wrote, the next one loads intact.
func TestDiskSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	d := openDisk(t, dir, 1<<20)
	for i := range 20 {
		if err := d.Put("h/obj"+strconv.Itoa(i), diskEntry("body "+strconv.Itoa(i), "")); err != nil {
			t.Fatal(err)
		}
	}
	d2 := openDisk(t, dir, 1<<20)
	if st := d2.Stats(); st.Objects != 20 {
		t.Fatalf("reloaded %d objects", st.Objects)
	}
	vs := d2.Get("h/obj7")
	if len(vs) != 1 || vs[0].ETag != `"e"` || vs[0].TTL != time.Hour || vs[0].Header.Get("Content-Type") != "text/plain" ||
		!vs[0].FetchedAt().Equal(time.Unix(1699999000, 0)) {
		t.Fatalf("metadata %+v", vs)
	}
	b, err := d2.ReadBody(vs[0])
	if err != nil || string(b) != "body 7" {
		t.Fatalf("body %q %v", b, err)
	}
}

// TestDiskDropsTemporaryAndCorruptFiles: a crash mid-write leaves a temporary
// file, bit rot leaves a bad checksum, a cut file a bad trailer: none is loaded.
func TestDiskDropsTemporaryAndCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	d := openDisk(t, dir, 1<<20)
	for _, k := range []string{"good", "rot", "cut"} {
		if err := d.Put(k, diskEntry("content of "+k, "")); err != nil {
			t.Fatal(err)
		}
	}
	w, _ := d.Create("half", 0)
	_, _ = w.Write([]byte("half written"))
	_ = w.Flush() // the process dies here: no Commit

	rot := d.Get("rot")[0].Path()
	data, _ := os.ReadFile(rot)
	data[0] ^= 0xff
	_ = os.WriteFile(rot, data, 0o644)
	cut := d.Get("cut")[0].Path()
	data, _ = os.ReadFile(cut)
	_ = os.WriteFile(cut, data[:len(data)-3], 0o644)

	d2 := openDisk(t, dir, 1<<20)
	if st := d2.Stats(); st.Objects != 1 || len(d2.Get("good")) != 1 {
		t.Fatalf("loaded %d objects", st.Objects)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "v1", "tmp", "*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	for _, p := range []string{rot, cut} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("corrupt %s kept", p)
		}
	}
}

func TestDiskBudgetAndVariants(t *testing.T) {
	d := openDisk(t, t.TempDir(), 10_000)
	big := string(bytes.Repeat([]byte("x"), 1000))
	for i := range 50 {
		_ = d.Put("k"+strconv.Itoa(i), diskEntry(big, ""))
		if st := d.Stats(); st.Bytes > 10_000 {
			t.Fatalf("disk tier holds %d bytes, budget 10000", st.Bytes)
		}
	}
	if st := d.Stats(); st.Evictions != 40 || st.Objects != 10 {
		t.Errorf("stats %+v", st)
	}
	if len(d.Get("k0")) != 0 || len(d.Get("k49")) != 1 {
		t.Error("LRU order not kept")
	}
	_ = d.Put("v", diskEntry("en", "lang=en"))
	_ = d.Put("v", diskEntry("fr", "lang=fr"))
	_ = d.Put("v", diskEntry("en2", "lang=en"))
	if vs := d.Get("v"); len(vs) != 2 {
		t.Fatalf("%d variants", len(vs))
	}
	if !d.Invalidate("v") || len(d.Get("v")) != 0 {
		t.Error("Invalidate")
	}
}

// A fill that starts its file while the index loads (a node serves during
// Load) commits it: Load leaves the temporary files of this run alone; the
// ones an earlier run left are gone once the tier is open.
func TestLoadBesideFill(t *testing.T) {
	dir := t.TempDir()
	stray := filepath.Join(dir, "v1", "tmp", "1-1.tmp")
	if err := os.MkdirAll(filepath.Dir(stray), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stray, []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDisk(dir, 1<<30, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Errorf("an earlier run's temporary file is still there: %v", err)
	}
	w, err := d.Create("k", 4)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte("body"))
	if err := d.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(&Entry{Status: 200, Header: http.Header{}}); err != nil {
		t.Errorf("a fill that began before Load: %v", err)
	}
}
