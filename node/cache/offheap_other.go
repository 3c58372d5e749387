//go:build !linux

package cache

// Memory files are Linux's; elsewhere every body stays on the heap.
func memfile() (int, error)           { return -1, errNoOffHeap }
func pwrite(int, []byte, int64) error { return errNoOffHeap }
func seal(int) error                  { return errNoOffHeap }
