package lab

import (
	"syscall"
	"time"

	"github.com/reshard/reshard/pgserver"
)

// runAs is the user the lab runs PostgreSQL as (pgserver.RunAs).
type runAs = pgserver.RunAs

func lastLines(s string, n int) string { return pgserver.LastLines(s, n) }

func alive(pid int) bool { return pgserver.Alive(pid) }

func stopPID(pid int, sig syscall.Signal, d time.Duration) { pgserver.StopPID(pid, sig, d) }
