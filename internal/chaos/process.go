//go:build linux

package chaos

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a child process in its own process group, so that a SIGKILL
// reaches whatever it started too, and so that it dies with the test
// process (Pdeathsig) if that one is killed by a test timeout.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File

	mu  sync.Mutex
	err error // the exit status, once done is closed
}

// StartProc runs bin with args, appending its stdout and stderr to logPath
// (restarts of the same part share one log). env is added to the
// environment.
func StartProc(name, bin, logPath string, env []string, args ...string) (*Proc, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("chaos: open log of %s: %w", name, err)
	}
	fmt.Fprintf(lf, "=== chaos: start %s at %s: %s %v\n", name, time.Now().Format(time.RFC3339Nano), bin, args)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(cleanEnv(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("chaos: start %s: %w", name, err)
	}
	p := &Proc{Name: name, cmd: cmd, done: make(chan struct{}), log: lf}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		fmt.Fprintf(lf, "=== chaos: %s exited at %s: %v\n", name, time.Now().Format(time.RFC3339Nano), err)
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

// cleanEnv is the test's environment without proxy settings: every part
// talks to 127.0.0.1, and a developer's proxy must not sit in the path.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Pid is the child's process id (and its process group id).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Kill sends SIGKILL to the process group and waits (bounded) for the
// process to be reaped. Killing an ended process is a no-op.
func (p *Proc) Kill() error {
	if p.Exited() {
		return nil
	}
	// The negative pid names the group: the child and anything it forked.
	if err := syscall.Kill(-p.Pid(), syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("chaos: kill %s: %w", p.Name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("chaos: %s (pid %d) not reaped 10s after SIGKILL", p.Name, p.Pid())
	}
}

// Stop asks the process to end with SIGTERM, and kills it if it has not
// ended within grace.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGTERM) // if it fails, the kill below does the job
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		return p.Kill()
	}
}

// ExitErr is the process's exit status once it has ended.
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}
