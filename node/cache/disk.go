package cache

import (
	"bufio"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// On-disk format, version 1. Each stored variant is one file,
//
//	DIR/v1/<h[0:2]>/<h>.obj   with h = hex(sha256(key + "\x00" + varyKey))
//
// holding, in order: the body; the metadata as JSON (diskMeta); the JSON's
// length as a 4-byte big-endian integer; the magic "MCDN"; the version byte 1.
// A file is written as DIR/v1/tmp/<n>.tmp and renamed into place only once
// complete, so a crashed process never leaves a half-written object under an
// object name. Files are not fsynced (a cache may lose recent objects to a power
// loss): start-up removes temporary files and drops any object whose trailer,
// size or SHA-256 does not match, so a torn file is never served either.
const (
	diskVersion   = 1
	diskMagic     = "MCDN"
	trailerLen    = 4 + len(diskMagic) + 1
	maxMetaLen    = 1 << 20
	diskObjSuffix = ".obj"
)

// diskMeta is the metadata stored with each object.
type diskMeta struct {
	Key                  string              `json:"key"`
	VaryKey              string              `json:"vary_key,omitempty"`
	Vary                 []string            `json:"vary,omitempty"`
	Status               int                 `json:"status"`
	Header               map[string][]string `json:"header"`
	Size                 int64               `json:"size"`
	SHA256               string              `json:"sha256"`
	ResponseTime         time.Time           `json:"response_time"`
	Fetched              time.Time           `json:"fetched,omitzero"`
	InitialAge           time.Duration       `json:"initial_age"`
	TTL                  time.Duration       `json:"ttl"`
	TTLSource            string              `json:"ttl_source,omitempty"`
	NoStale              bool                `json:"no_stale,omitempty"`
	StaleWhileRevalidate time.Duration       `json:"swr"`
	StaleIfError         time.Duration       `json:"sie"`
	ETag                 string              `json:"etag,omitempty"`
	LastModified         time.Time           `json:"last_modified"`
}

// DiskEntry is a variant stored on disk: its metadata as an Entry without Body,
// and where its body lies.
type DiskEntry struct {
	*Entry
	Key  string
	path string
	sha  string        // hex SHA-256 of the body
	elem *list.Element // in Disk.lru
}

// Path is the file holding the entry; its body is the first Size bytes.
func (de *DiskEntry) Path() string { return de.path }

// Disk is the disk tier: a byte-bounded LRU of object files.
type Disk struct {
	dir string
	max int64
	log *slog.Logger

	mu    sync.Mutex
	index map[string][]*DiskEntry // primary key → variants
	lru   *list.List              // of *DiskEntry, most recent first
	bytes int64

	evictions atomic.Uint64
	tmpSeq    atomic.Uint64

	// Room on the file system (see room).
	reserved  atomic.Int64 // bytes promised to objects being written
	full      atomic.Bool
	fullUntil atomic.Int64 // unix nanos: a full tier looks again from then
	refused   atomic.Uint64
}

// OpenDisk prepares dir for a disk tier of maxBytes and removes the
// temporary files an earlier run left. It starts nothing; call Load to
// index the objects an earlier run stored.
func OpenDisk(dir string, maxBytes int64, log *slog.Logger) (*Disk, error) {
	d := &Disk{dir: filepath.Join(dir, fmt.Sprintf("v%d", diskVersion)), max: maxBytes, log: log,
		index: map[string][]*DiskEntry{}, lru: list.New()}
	tmp := filepath.Join(d.dir, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("cache dir: %w", err)
	}
	// What an earlier run left half-written goes now, before any fill of
	// this one starts a file there (Load runs alongside fills).
	if ents, err := os.ReadDir(tmp); err == nil {
		for _, e := range ents {
			_ = os.Remove(filepath.Join(tmp, e.Name()))
		}
	}
	return d, nil
}

func (d *Disk) objectPath(key, varyKey string) string {
	sum := sha256.Sum256([]byte(key + "\x00" + varyKey))
	h := hex.EncodeToString(sum[:])
	return filepath.Join(d.dir, h[:2], h+diskObjSuffix)
}

// Load indexes the objects in the directory, verifying each one's trailer,
// size and checksum, and removes corrupt objects; fills may run meanwhile. It
// returns early, with what it indexed so far, when ctx ends.
func (d *Disk) Load(ctx context.Context) error {
	var loaded, dropped int
	err := filepath.WalkDir(d.dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable entries are skipped
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if e.IsDir() || !strings.HasSuffix(path, diskObjSuffix) {
			return nil
		}
		de, err := readObject(path, true)
		if err != nil || path != d.objectPath(de.Key, de.VaryKey) {
			d.log.Warn("dropping corrupt cache file", "path", path, "err", err)
			_ = os.Remove(path)
			dropped++
			return nil
		}
		d.insert(de)
		loaded++
		return nil
	})
	d.log.Info("disk tier loaded", "objects", loaded, "dropped", dropped, "bytes", d.Stats().Bytes)
	return err
}

// readObject reads an object file's metadata; with verify it also checks the
// body's SHA-256.
func readObject(path string, verify bool) (*DiskEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() < int64(trailerLen) {
		return nil, errors.New("too short")
	}
	var tr [trailerLen]byte
	if _, err := f.ReadAt(tr[:], st.Size()-int64(trailerLen)); err != nil {
		return nil, err
	}
	if string(tr[4:8]) != diskMagic || tr[8] != diskVersion {
		return nil, errors.New("bad trailer")
	}
	metaLen := int64(binary.BigEndian.Uint32(tr[:4]))
	if metaLen > maxMetaLen || metaLen > st.Size()-int64(trailerLen) {
		return nil, errors.New("bad metadata length")
	}
	buf := make([]byte, metaLen)
	if _, err := f.ReadAt(buf, st.Size()-int64(trailerLen)-metaLen); err != nil {
		return nil, err
	}
	var m diskMeta
	if err := json.Unmarshal(buf, &m); err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	if m.Size != st.Size()-int64(trailerLen)-metaLen {
		return nil, fmt.Errorf("body is %d bytes, metadata says %d", st.Size()-int64(trailerLen)-metaLen, m.Size)
	}
	if verify {
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, m.Size)); err != nil {
			return nil, err
		}
		if hex.EncodeToString(h.Sum(nil)) != m.SHA256 {
			return nil, errors.New("checksum mismatch")
		}
	}
	e := &Entry{Status: m.Status, Header: http.Header(m.Header), Size: m.Size, Vary: m.Vary, VaryKey: m.VaryKey,
		ResponseTime: m.ResponseTime, Fetched: m.Fetched, InitialAge: m.InitialAge, TTL: m.TTL, TTLSource: m.TTLSource,
		NoStale: m.NoStale, StaleWhileRevalidate: m.StaleWhileRevalidate, StaleIfError: m.StaleIfError,
		ETag: m.ETag, LastModified: m.LastModified}
	e.prepare()
	return &DiskEntry{Entry: e, Key: m.Key, path: path, sha: m.SHA256}, nil
}

// Get returns the variants stored on disk under key, marking them used.
func (d *Disk) Get(key string) []*DiskEntry {
	d.mu.Lock()
	defer d.mu.Unlock()
	vs := d.index[key]
	for _, de := range vs {
		d.lru.MoveToFront(de.elem)
	}
	return vs
}

// insert indexes de, replacing the variant it supersedes, and evicts the least
// recently used objects beyond the budget.
func (d *Disk) insert(de *DiskEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	vs := d.index[de.Key]
	kept := vs[:0:0]
	for _, v := range vs {
		if v.path == de.path {
			d.unlinkLocked(v, false) // the new file already replaced it by rename
			continue
		}
		if !slices.Equal(v.Vary, de.Vary) {
			d.unlinkLocked(v, true)
			continue
		}
		kept = append(kept, v)
	}
	de.elem = d.lru.PushFront(de)
	d.index[de.Key] = append(kept, de)
	d.bytes += de.Size
	for d.bytes > d.max && d.lru.Len() > 1 {
		old := d.lru.Back().Value.(*DiskEntry)
		d.removeLocked(old)
		d.evictions.Add(1)
	}
}

// removeLocked drops de from the index and deletes its file.
func (d *Disk) removeLocked(de *DiskEntry) {
	if de.elem == nil {
		return
	}
	vs := d.index[de.Key]
	for i, v := range vs {
		if v == de {
			vs = append(vs[:i:i], vs[i+1:]...)
			break
		}
	}
	if len(vs) == 0 {
		delete(d.index, de.Key)
	} else {
		d.index[de.Key] = vs
	}
	d.unlinkLocked(de, true)
}

func (d *Disk) unlinkLocked(de *DiskEntry, deleteFile bool) {
	if de.elem == nil {
		return // already gone
	}
	d.lru.Remove(de.elem)
	de.elem = nil
	d.bytes -= de.Size
	if deleteFile {
		_ = os.Remove(de.path)
	}
}

// Invalidate removes every variant stored under key.
func (d *Disk) Invalidate(key string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	vs := d.index[key]
	for _, de := range append([]*DiskEntry(nil), vs...) {
		d.removeLocked(de)
	}
	return len(vs) > 0
}

// Stats returns the tier's size and eviction count.
func (d *Disk) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return Stats{Objects: d.lru.Len(), Bytes: uint64(d.bytes), Capacity: uint64(d.max), Evictions: d.evictions.Load()}
}

// Writer streams one object to a temporary file. Commit makes it visible;
// Abort (or a crash) leaves nothing behind under an object name.
type Writer struct {
	d    *Disk
	key  string
	f    *os.File
	bw   *bufio.Writer
	sum  hash.Hash
	n    int64
	done bool
	// reserved is the room Create promised; released when the writer ends.
	reserved int64
}

// Create starts writing an object for key of size bytes (0 or less:
// unknown). It fails with ErrDiskFull when the file system has no room for
// it, and refuses at once while the tier is full.
func (d *Disk) Create(key string, size int64) (*Writer, error) {
	if err := d.room(size); err != nil {
		return nil, err
	}
	if size <= 0 {
		size = unknownObject
	}
	name := filepath.Join(d.dir, "tmp", fmt.Sprintf("%d-%d.tmp", os.Getpid(), d.tmpSeq.Add(1)))
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		d.reserved.Add(-size)
		return nil, d.checkSpace(err)
	}
	return &Writer{d: d, key: key, f: f, bw: bufio.NewWriterSize(f, 256<<10), sum: sha256.New(), reserved: size}, nil
}

// checkSpace marks the tier full when err says the file system is.
func (d *Disk) checkSpace(err error) error {
	if noSpace(err) {
		free, _ := freeBytes(d.dir)
		d.markFull(time.Now(), free)
		return errors.Join(ErrDiskFull, err)
	}
	return err
}

// Write appends body bytes.
func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.bw.Write(p)
	w.sum.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		err = w.d.checkSpace(err)
	}
	return n, err
}

// Flush pushes buffered bytes to the file, so ReadAt sees them.
func (w *Writer) Flush() error {
	if err := w.bw.Flush(); err != nil {
		return w.d.checkSpace(err)
	}
	return nil
}

// File is the temporary file, for reading what has been flushed.
func (w *Writer) File() *os.File { return w.f }

// Written is how many body bytes were written.
func (w *Writer) Written() int64 { return w.n }

// Commit finishes the object as e (whose Body is ignored): it appends the
// metadata, renames the file into place and indexes it.
func (w *Writer) Commit(e *Entry) (*DiskEntry, error) {
	if w.done {
		return nil, errors.New("cache: writer already finished")
	}
	w.done = true
	defer w.d.reserved.Add(-w.reserved)
	m := diskMeta{Key: w.key, VaryKey: e.VaryKey, Vary: e.Vary, Status: e.Status, Header: e.Header, Size: w.n,
		SHA256: hex.EncodeToString(w.sum.Sum(nil)), ResponseTime: e.ResponseTime, Fetched: e.Fetched, InitialAge: e.InitialAge,
		TTL: e.TTL, TTLSource: e.TTLSource, NoStale: e.NoStale, StaleWhileRevalidate: e.StaleWhileRevalidate,
		StaleIfError: e.StaleIfError, ETag: e.ETag, LastModified: e.LastModified}
	meta, err := json.Marshal(m)
	if err == nil && len(meta) > maxMetaLen {
		err = errors.New("metadata too large")
	}
	if err == nil {
		var tr [trailerLen]byte
		binary.BigEndian.PutUint32(tr[:4], uint32(len(meta)))
		copy(tr[4:8], diskMagic)
		tr[8] = diskVersion
		_, err = w.bw.Write(append(meta, tr[:]...))
	}
	if err == nil {
		err = w.Flush()
	}
	path := w.d.objectPath(w.key, e.VaryKey)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(path), 0o755)
	}
	if err == nil {
		err = os.Rename(w.f.Name(), path)
	}
	if err != nil {
		w.abort()
		return nil, fmt.Errorf("cache: writing %s: %w", w.key, err)
	}
	_ = w.f.Close()
	stored := *e
	stored.Body, stored.Size = nil, w.n
	stored.prepare()
	de := &DiskEntry{Entry: &stored, Key: w.key, path: path, sha: m.SHA256}
	w.d.insert(de)
	return de, nil
}

// Abort discards the object.
func (w *Writer) Abort() {
	if !w.done {
		w.done = true
		w.d.reserved.Add(-w.reserved)
		w.abort()
	}
}

func (w *Writer) abort() {
	_ = w.f.Close()
	_ = os.Remove(w.f.Name())
}

// Put writes a complete in-memory entry through to disk.
func (d *Disk) Put(key string, e *Entry) error {
	src := e.Source()
	w, err := d.Create(key, src.Size())
	if err != nil {
		return err
	}
	if _, err := src.Copy(context.Background(), w, nil, 0, -1); err != nil {
		w.Abort()
		return err
	}
	_, err = w.Commit(e)
	return err
}

// ReadBody reads a disk entry's whole body and checks it against its checksum.
// A body that does not match is removed and reported as an error.
func (d *Disk) ReadBody(de *DiskEntry) ([]byte, error) {
	f, err := os.Open(de.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	body := make([]byte, de.Size)
	if _, err := io.ReadFull(f, body); err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != de.sha {
		d.mu.Lock()
		d.removeLocked(de)
		d.mu.Unlock()
		return nil, fmt.Errorf("cache: %s: checksum mismatch", de.path)
	}
	return body, nil
}

// Purge removes the disk variants matching m, or with soft rewrites them as
// stale (the body file is copied with new metadata). It returns how many
// variants matched.
func (d *Disk) Purge(match Match, soft bool) int {
	d.mu.Lock()
	var hits []*DiskEntry
	for k, vs := range d.index {
		for _, de := range vs {
			if match(k, de.Entry) {
				hits = append(hits, de)
			}
		}
	}
	if !soft {
		for _, de := range hits {
			d.removeLocked(de)
		}
	}
	d.mu.Unlock()
	if soft {
		for _, de := range hits {
			if _, err := d.Rewrite(de.Key, de, de.Entry.Stale()); err != nil {
				d.log.Warn("soft purge could not rewrite; removing", "key", de.Key, "err", err)
				d.mu.Lock()
				d.removeLocked(de)
				d.mu.Unlock()
			}
		}
	}
	return len(hits)
}

// Rewrite stores e, whose body is the file of de, as a new object (the body
// is copied; the new file replaces the old one atomically).
func (d *Disk) Rewrite(key string, de *DiskEntry, e *Entry) (*DiskEntry, error) {
	f, err := os.Open(de.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	w, err := d.Create(key, de.Size)
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyN(w, f, de.Size); err != nil {
		w.Abort()
		return nil, err
	}
	return w.Commit(e)
}
