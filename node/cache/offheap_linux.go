package cache

import (
	"errors"

	"golang.org/x/sys/unix"
)

// memfile returns a memory file holding p, sealed against any change.
func memfile(p []byte) (int, error) {
	fd, err := unix.MemfdCreate("meshcdn-body", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, err
	}
	for n := 0; n < len(p); {
		m, err := unix.Write(fd, p[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return -1, err
		}
		n += m
	}
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}
