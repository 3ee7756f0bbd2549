package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one child process: the NATS server or one incarnation of the
// bridge. Its output goes to a log file in the scenario's directory.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has been waited for
	err  error         // how it ended, once done is closed
}

// startProc starts bin with args. The child gets SIGKILL if the bench
// process dies (Pdeathsig) and has its own process group, so a Ctrl-C at
// the terminal reaches the bench, which then stops its children in order.
func startProc(name, bin string, args, env []string, logPath string) (*proc, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: lf, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop asks the process to stop with SIGTERM and kills it after grace.
func (p *proc) stop(grace time.Duration) {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

// usage is what a process cost while it was measured.
type usage struct {
	peakRSS int64         // bytes (VmHWM)
	cpu     time.Duration // user + system
}

// resetPeak makes the kernel forget the peak RSS so far (clear_refs 5), so
// that a measurement does not include the setup before it. It reports
// whether the kernel allowed it.
func resetPeak(pid int) bool {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
}

// readUsage reads VmHWM from /proc/PID/status and utime+stime from
// /proc/PID/stat.
func readUsage(pid int) (usage, error) {
	var u usage
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, fmt.Errorf("read status of %d: %w", pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return u, fmt.Errorf("VmHWM of %d: %w", pid, err)
			}
			u.peakRSS = kb << 10
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	// The command name may hold spaces: fields start after its ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, fmt.Errorf("stat of %d: no command name", pid)
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 13 {
		return u, fmt.Errorf("stat of %d: %d fields", pid, len(fields))
	}
	// Fields 14 and 15 of the man page (utime, stime) are 12 and 13 here.
	ut, err1 := strconv.ParseInt(fields[11], 10, 64)
	st, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return u, fmt.Errorf("stat of %d: %w", pid, err)
	}
	const ticks = 100 // USER_HZ on every Linux Go runs on
	u.cpu = time.Duration(ut+st) * time.Second / ticks
	return u, nil
}

// freeAddr returns a loopback address with a port nobody listens on now.
// The port is reused across restarts of the process given it.
func freeAddr() (string, error) {
	addrs, err := freeAddrs(1)
	if err != nil {
		return "", err
	}
	return addrs[0], nil
}

// freeAddrs returns n distinct free loopback addresses: each port is held
// until all are found.
func freeAddrs(n int) ([]string, error) {
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			ln.Close()
		}
	}()
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		held = append(held, ln)
		addrs[i] = ln.Addr().String()
	}
	return addrs, nil
}

// waitHTTP polls url until it answers 200, the process exits or ctx ends.
func waitHTTP(ctx context.Context, p *proc, url string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready: %v (see %s)", p.name, p.err, p.log.Name())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s after %s (see %s)", p.name, url, limit, p.log.Name())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitTCP polls addr until it accepts connections.
func waitTCP(ctx context.Context, p *proc, addr string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		var d net.Dialer
		if c, err := d.DialContext(ctx, "tcp", addr); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it listened: %v (see %s)", p.name, p.err, p.log.Name())
		case <-ctx.Done():
			return fmt.Errorf("%s not listening on %s after %s (see %s)", p.name, addr, limit, p.log.Name())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
