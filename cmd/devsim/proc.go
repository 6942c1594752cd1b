package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on every Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

// procSample is what /proc says about the server process at one moment.
type procSample struct {
	CPU     time.Duration // user + system time so far, all threads
	RSS     int64         // resident set size, bytes (VmRSS)
	Threads int
	// tasks is each live thread's run time in nanoseconds
	// (/proc/PID/task/TID/schedstat), nil when unreadable: exact where
	// CPU is counted in clock ticks.
	tasks map[int]uint64
}

// cpuBetween is the CPU time the process used from a to b: the sum of its
// threads' run times when every thread of a is still there in b (threads
// that end take their time with them), else the clock-tick figure.
func cpuBetween(a, b procSample) time.Duration {
	if a.tasks == nil || b.tasks == nil {
		return b.CPU - a.CPU
	}
	var ns uint64
	for tid, t := range b.tasks {
		before, ok := a.tasks[tid]
		if t < before {
			return b.CPU - a.CPU
		}
		if ok {
			t -= before
		}
		ns += t
	}
	for tid := range a.tasks {
		if _, ok := b.tasks[tid]; !ok {
			return b.CPU - a.CPU
		}
	}
	return time.Duration(ns)
}

// readTasks reads the run time of every thread of pid; nil if any is
// unreadable (a kernel without schedstat, a thread ending meanwhile).
func readTasks(pid int) map[int]uint64 {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := make(map[int]uint64, len(ents))
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			return nil
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return nil
		}
		ns, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return nil
		}
		out[tid] = ns
	}
	return out
}

// readProc samples process pid from /proc (Linux only).
func readProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name is in parentheses and may hold spaces: count fields
	// after the last ')'. Field 3 (state) is rest[0]; utime and stime are
	// fields 14 and 15 (proc(5)).
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	rest := strings.Fields(string(stat[i+1:]))
	if len(rest) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(rest[11], 10, 64)
	stime, err2 := strconv.ParseInt(rest[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	s.CPU = time.Duration(utime+stime) * clockTick
	s.tasks = readTasks(pid)

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(value)
		if len(f) == 0 {
			continue
		}
		switch name {
		case "VmRSS":
			kb, _ := strconv.ParseInt(f[0], 10, 64)
			s.RSS = kb * 1024
		case "Threads":
			s.Threads, _ = strconv.Atoi(f[0])
		}
	}
	return s, nil
}

// serverWatch samples the server process, if one was named, at the edges
// of the phases; a failed read is remembered and reported, not fatal.
type serverWatch struct {
	pid int
	err error
}

func (w *serverWatch) sample() (procSample, bool) {
	if w == nil || w.pid == 0 {
		return procSample{}, false
	}
	s, err := readProc(w.pid)
	if err != nil {
		if w.err == nil {
			w.err = err
		}
		return procSample{}, false
	}
	return s, true
}
