package testutil

import "syscall"

// sysProcAttr kills the server when the test binary dies, so a crashed or
// killed test run leaves no MinIO behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
