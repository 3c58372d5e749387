package cache

import (
	"errors"
	"syscall"
	"time"
)

// ErrDiskFull is returned by Create while the disk tier's file system has
// no room for the object: the caller streams it through instead.
var ErrDiskFull = errors.New("cache: the disk tier's file system is full")

// Room the disk tier leaves free on its file system, beyond the objects
// being written, and how often a full tier looks again.
const (
	minFree       = 8 << 20
	fullRecheck   = 5 * time.Second
	unknownObject = 1 << 20 // what an object of unknown size is assumed to need
)

// room reserves size bytes for a new object, or fails with ErrDiskFull when
// the file system cannot take them. A full tier refuses at once until
// fullRecheck has passed, then looks again; it logs when it fills and when
// space returns.
func (d *Disk) room(size int64) error {
	if size <= 0 {
		size = unknownObject
	}
	now := time.Now()
	if d.full.Load() && now.UnixNano() < d.fullUntil.Load() {
		d.refused.Add(1)
		return ErrDiskFull
	}
	if free, ok := freeBytes(d.dir); ok && free-d.reserved.Load()-size < minFree {
		d.markFull(now, free)
		d.refused.Add(1)
		return ErrDiskFull
	}
	if d.full.Swap(false) {
		d.log.Info("disk tier has room again: large objects are stored", "dir", d.dir)
	}
	d.reserved.Add(size)
	return nil
}

// markFull makes the tier refuse new objects until fullRecheck has passed.
func (d *Disk) markFull(now time.Time, free int64) {
	d.fullUntil.Store(now.Add(fullRecheck).UnixNano())
	if !d.full.Swap(true) {
		d.log.Warn("disk tier full: new large objects stream through from the origin unstored until space returns",
			"dir", d.dir, "free", free)
	}
}

// Full reports whether the tier refuses new objects for lack of space.
func (d *Disk) Full() bool { return d.full.Load() }

// Refused counts the objects the tier refused for lack of space.
func (d *Disk) Refused() uint64 { return d.refused.Load() }

// freeBytes is what an unprivileged writer may still use on dir's file
// system; ok is false where that is unknown.
func freeBytes(dir string) (int64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * int64(st.Bsize), true //nolint:unconvert // field types differ by platform
}

// noSpace reports whether err says the file system is full.
func noSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) }
