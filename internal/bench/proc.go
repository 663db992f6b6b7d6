package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a linkedge process the fleet bench starts: the broker or the
// publisher, in a process of its own so that its CPU and memory are its own.
type child struct {
	name string
	exe  string
	args []string
	env  []string // added to this process's environment
	log  string   // appended to across restarts

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	usage   procUsage // of the processes that exited, summed
	peak    int64     // highest VmRSS seen, bytes
}

// procUsage is what /proc says about a process.
type procUsage struct {
	CPU time.Duration // user + system
	RSS int64         // bytes
}

func (u procUsage) add(v procUsage) procUsage {
	return procUsage{CPU: u.CPU + v.CPU, RSS: max(u.RSS, v.RSS)}
}

// start runs the process; its output goes to the log file.
func (c *child) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		return fmt.Errorf("%s already runs", c.name)
	}
	f, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.exe, c.args...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(c.env) > 0 {
		cmd.Env = append(os.Environ(), c.env...)
	}
	// Its own process group: a Ctrl-C on the bench is the bench's to
	// handle, and it stops its children itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", c.name, err)
	}
	c.cmd, c.done = cmd, make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		err := cmd.Wait()
		f.Close()
		c.mu.Lock()
		c.waitErr = err
		if ps := cmd.ProcessState; ps != nil {
			c.usage = c.usage.add(procUsage{CPU: ps.UserTime() + ps.SystemTime()})
		}
		c.mu.Unlock()
		close(done)
	}(cmd, c.done)
	return nil
}

// stop ends the process with sig (SIGTERM: a clean stop, SIGKILL: a crash)
// and waits at most limit for it.
func (c *child) stop(sig syscall.Signal, limit time.Duration) error {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	cmd.Process.Signal(sig)
	var timedOut error
	select {
	case <-done:
	case <-time.After(limit):
		cmd.Process.Kill()
		timedOut = fmt.Errorf("%s did not stop within %s of %s; killed", c.name, limit, sig)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			return fmt.Errorf("%s: not gone 5 s after SIGKILL", c.name)
		}
	}
	c.mu.Lock()
	c.cmd = nil
	err := c.waitErr
	c.mu.Unlock()
	if timedOut != nil {
		return timedOut
	}
	var ee *exec.ExitError
	if sig == syscall.SIGKILL || errors.As(err, &ee) && !ee.Exited() {
		return nil // killed: the exit status says so
	}
	if err != nil {
		return fmt.Errorf("%s: %w (see %s)", c.name, err, c.log)
	}
	return nil
}

// alive reports an error when the process exited on its own.
func (c *child) alive() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return fmt.Errorf("%s is not running", c.name)
	}
	select {
	case <-c.done:
		return fmt.Errorf("%s exited: %v (see %s)", c.name, c.waitErr, c.log)
	default:
		return nil
	}
}

// sample reads the running process's usage, adds the CPU of those that
// exited, and keeps the peak RSS.
func (c *child) sample() procUsage {
	c.mu.Lock()
	defer c.mu.Unlock()
	u := c.usage
	if c.cmd != nil {
		select {
		case <-c.done:
		default:
			if v, err := readProc(c.cmd.Process.Pid); err == nil {
				u = procUsage{CPU: u.CPU + v.CPU, RSS: v.RSS}
			}
		}
	}
	c.peak = max(c.peak, u.RSS)
	return u
}

// peakRSS returns the highest RSS sampled since the last call, and starts
// over.
func (c *child) peakRSS() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.peak
	c.peak = 0
	return p
}

// clockTick is USER_HZ, the unit of /proc/{pid}/stat's times: 100 on every
// Linux this runs on.
const clockTick = 100

// readProc reads a process's CPU time and resident set from /proc.
func readProc(pid int) (procUsage, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procUsage{}, err
	}
	// The command name may hold spaces; the fields after it do not.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return procUsage{}, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return procUsage{}, errors.New("short /proc stat")
	}
	// f[0] is field 3 (state): utime is field 14, stime 15.
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	u := procUsage{CPU: time.Duration(ut+st) * time.Second / clockTick}
	sf, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	defer sf.Close()
	sc := bufio.NewScanner(sf)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			u.RSS = kb << 10
		}
	}
	return u, nil
}

// waitListening waits until addr accepts TCP connections.
func waitListening(ctx context.Context, c *child, addr string, limit time.Duration) error {
	err := waitUntil(ctx, limit, c.name+" to listen on "+addr, func() bool {
		if c.alive() != nil {
			return true // reported below
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	})
	if err != nil {
		return err
	}
	return c.alive()
}
