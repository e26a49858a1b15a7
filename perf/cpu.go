package perf

import (
	"os"
	"strconv"
	"strings"
)

// clockTicks is the kernel's USER_HZ, the unit of /proc's CPU times: 100
// on every Linux this runs on.
const clockTicks = 100

// CPU is a reading of CPU time spent, in seconds: by the whole machine
// and by chosen processes.
type CPU struct {
	Machine float64
	Procs   map[string]float64
}

// ReadCPU reads the machine's busy time (/proc/stat: everything but idle
// and iowait) and each named process's (/proc/PID/stat: user and system).
func ReadCPU(procs map[string]int) CPU {
	c := CPU{Procs: map[string]float64{}}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		for i := 1; i < len(f); i++ {
			if i == 4 || i == 5 { // idle, iowait
				continue
			}
			n, _ := strconv.ParseFloat(f[i], 64)
			c.Machine += n / clockTicks
		}
	}
	for name, pid := range procs {
		c.Procs[name] = procCPU(pid)
	}
	return c
}

// procCPU is a process's user and system time, in seconds (0 if gone).
func procCPU(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: fields start
	// after its closing one. utime and stime are fields 14 and 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	k, _ := strconv.ParseFloat(f[12], 64)
	return (u + k) / clockTicks
}

// Sub is the CPU spent between two readings.
func (c CPU) Sub(before CPU) CPU {
	out := CPU{Machine: c.Machine - before.Machine, Procs: map[string]float64{}}
	for k, v := range c.Procs {
		out.Procs[k] = v - before.Procs[k]
	}
	return out
}

func (c *CPU) add(d CPU) {
	c.Machine += d.Machine
	for k, v := range d.Procs {
		c.Procs[k] += v
	}
}
