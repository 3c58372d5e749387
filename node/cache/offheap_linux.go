package cache

import (
	"errors"

	"golang.org/x/sys/unix"
)

// memfile returns a new, empty memory file that may be sealed.
func memfile() (int, error) {
	return unix.MemfdCreate("meshcdn-body", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
}

// pwrite writes all of p at off.
func pwrite(fd int, p []byte, off int64) error {
	for n := 0; n < len(p); {
		m, err := unix.Pwrite(fd, p[n:], off+int64(n))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		n += m
	}
	return nil
}

// seal forbids any change to the memory file's bytes and length. It uses
// F_SEAL_FUTURE_WRITE, not F_SEAL_WRITE: the latter fails (EBUSY) while a
// socket still holds pages that sendfile gave it, which is the case when
// clients followed the file as it was written. Kernels before 5.1 have no
// F_SEAL_FUTURE_WRITE; there the length alone is sealed.
func seal(fd int) error {
	fixed := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
	_, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, fixed|unix.F_SEAL_FUTURE_WRITE)
	if errors.Is(err, unix.EINVAL) {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, fixed)
	}
	return err
}
