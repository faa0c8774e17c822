//go:build !linux

package payload

import "errors"

var errNoWriteback = errors.New("no sync_file_range")

func startWriteback(fd uintptr, off, n int64) error { return errNoWriteback }

func waitWriteback(fd uintptr, off, n int64) error { return errNoWriteback }
