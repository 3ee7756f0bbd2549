package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// natsServer is `wxbridge nats-server` on a fixed port and store, so that
// a restart comes back where clients reconnect to, with its streams. In a
// cluster it is one node: it has a name, takes routes on clusterAddr and
// dials the other nodes' routes.
type natsServer struct {
	bin, dir, addr string
	name           string // "" for the single server of most scenarios
	clusterAddr    string
	routes         []string
	p              *proc
}

func (n *natsServer) url() string { return "nats://" + n.addr }

// file names what belongs to this server in the scenario's directory:
// "nats" for the single server, "nats-n0" for a cluster's node n0.
func (n *natsServer) file() string {
	if n.name == "" {
		return "nats"
	}
	return "nats-" + n.name
}

func (n *natsServer) start(ctx context.Context) error {
	args := []string{"nats-server", "--store", filepath.Join(n.dir, n.file()), "--listen", n.addr}
	if n.clusterAddr != "" {
		args = append(args, "--name", n.name, "--cluster-listen", n.clusterAddr, "--routes", strings.Join(n.routes, ","))
	}
	p, err := startProc(n.file(), n.bin, args, []string{"WXBRIDGE_LOG_LEVEL=warn"}, filepath.Join(n.dir, n.file()+".log"))
	if err != nil {
		return err
	}
	n.p = p
	if err := waitTCP(ctx, p, n.addr, 30*time.Second); err != nil {
		p.kill()
		return err
	}
	return nil
}

// restart stops the server (SIGKILL when hard, else SIGTERM), leaves it
// down for a moment, and starts it again.
func (n *natsServer) restart(ctx context.Context, hard bool, down time.Duration) error {
	if hard {
		n.p.kill()
	} else {
		n.p.stop(10 * time.Second)
	}
	select {
	case <-time.After(down):
	case <-ctx.Done():
		return ctx.Err()
	}
	return n.start(ctx)
}

func (n *natsServer) stop() {
	if n.p != nil {
		n.p.stop(10 * time.Second)
	}
}

// bridgeProc is one bridge under test, `wxbridge serve`, across its
// incarnations: what it cost is summed (CPU) or maxed (peak RSS) over all
// of them while measuring.
type bridgeProc struct {
	bin, dir, listen string
	// name is "bridge" for the first bridge of a scenario, "bridge2" and
	// on for the others; it names the log and the data directory.
	name string
	args []string
	env  []string

	cur          *proc
	incarnations int
	measuring    bool
	cpuBase      time.Duration // CPU of cur when measuring started
	peak         int64
	cpu          time.Duration
}

func (b *bridgeProc) start(ctx context.Context, extraEnv ...string) error {
	data := "data"
	if b.name != "bridge" {
		data = "data-" + b.name
	}
	args := append([]string{"serve", "--data", filepath.Join(b.dir, data), "--listen", b.listen}, b.args...)
	env := append(append([]string(nil), b.env...), extraEnv...)
	p, err := startProc(b.name, b.bin, args, env, filepath.Join(b.dir, b.name+".log"))
	if err != nil {
		return err
	}
	b.cur, b.cpuBase = p, 0
	b.incarnations++
	if err := waitHTTP(ctx, p, "http://"+b.listen+"/readyz", 60*time.Second); err != nil {
		b.kill()
		return err
	}
	return nil
}

// beginMeasure forgets what the bridge cost so far (setup).
func (b *bridgeProc) beginMeasure() {
	b.measuring = true
	resetPeak(b.cur.pid())
	if u, err := readUsage(b.cur.pid()); err == nil {
		b.cpuBase = u.cpu
		b.peak = u.peakRSS // what is resident now; clear_refs may not be allowed
	}
}

// account folds what the current incarnation cost into the totals; call
// it just before the incarnation ends.
func (b *bridgeProc) account() {
	if b.cur == nil || !b.measuring {
		return
	}
	var u usage
	if b.cur.exited() {
		// Gone (a failpoint killed it): the kernel's record of its life.
		if ru, ok := b.cur.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			u.peakRSS = ru.Maxrss << 10
			u.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	} else if got, err := readUsage(b.cur.pid()); err == nil {
		u = got
	}
	b.peak = max(b.peak, u.peakRSS)
	b.cpu += max(0, u.cpu-b.cpuBase)
	b.cpuBase = u.cpu
}

func (b *bridgeProc) kill() {
	if b.cur == nil {
		return
	}
	b.account()
	b.cur.kill()
}

// endMeasure folds what the bridge cost into the totals and stops
// counting, so that what it does while the others stop is not counted.
func (b *bridgeProc) endMeasure() {
	b.account()
	b.measuring = false
}

func (b *bridgeProc) stop() {
	if b.cur == nil || b.cur.exited() {
		return
	}
	b.account()
	b.cur.stop(15 * time.Second)
}

// profile fetches a CPU profile of seconds from the bridge into path.
func (b *bridgeProc) profile(ctx context.Context, seconds int, path string) error {
	return b.fetchProfile(ctx, fmt.Sprintf("profile?seconds=%d", seconds), path)
}

// fetchProfile saves /debug/pprof/<name> of the bridge into path.
func (b *bridgeProc) fetchProfile(ctx context.Context, name, path string) error {
	url := fmt.Sprintf("http://%s/debug/pprof/%s", b.listen, name)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: HTTP %d", resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("profile: %w", err)
	}
	return f.Close()
}
