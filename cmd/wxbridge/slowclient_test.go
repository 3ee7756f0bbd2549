package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// The slow-client attack, against the real binary: hundreds of connections
// to the public listener, each sending its request a byte at a time and
// opening a new one when the server hangs up, several times the
// connection bound. The bridge must keep its descriptors within the bound,
// answer health checks, take a real signed push and process an event while
// it lasts, and close every slow connection.

const (
	slowBound     = 64  // --max-conns of the child
	slowAttackers = 300 // attacking connections open at once
	slowFDMargin  = 40  // descriptors beyond baseline + bound the child may hold
	slowAESKey    = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	slowToken     = "slow-push-token"
	slowAppID     = "wx00000000000000c1"
)

func TestSlowClientAttack(t *testing.T) {
	r := newCrashRig(t)
	// The crash rules, with push credentials so that WeChat can push.
	rulesYAML := strings.Replace(crashRules, "secret: crash-secret",
		"secret: crash-secret\n    push_token: "+slowToken+"\n    aes_key: "+slowAESKey, 1)
	if err := os.WriteFile(filepath.Join(r.dir, "rules.yaml"), []byte(rulesYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WXBRIDGE_MAX_CONNS", strconv.Itoa(slowBound))
	r.start("")
	pid := r.child.Process.Pid
	base := "http://" + r.httpAddr
	if err := r.emu.SetCallback(slowAppID, wechattest.Callback{URL: base + "/wechat/callback/main", Token: slowToken,
		EncodingAESKey: slowAESKey, Mode: wechattest.Safe, Format: wechattest.JSON}); err != nil {
		t.Fatal(err)
	}
	r.request("wxbridge.cmd.bind", map[string]string{"app": "main", "user_id": "u0", "openid": "o0"})
	if status, err := httpGet(base + "/healthz"); err != nil || status != 200 {
		t.Fatalf("/healthz before the attack: %d %v", status, err)
	}
	baseFDs, baseRSS := countFDs(t, pid), statusKiB(pid, "VmRSS")

	watch := watchProcess(t, pid)
	a := startSlowAttack(t, r.httpAddr, slowAttackers)
	a.waitOpen(t, slowAttackers)
	t.Logf("%d slow connections open against a bound of %d", slowAttackers, slowBound)

	// While it lasts: health checks, a real push and an event.
	var probes []time.Duration
	for i := 0; i < 5; i++ {
		start := time.Now()
		if status, err := httpGet(base + "/healthz"); err != nil || status != 200 {
			t.Errorf("/healthz during the attack: %d %v", status, err)
		}
		probes = append(probes, time.Since(start))
	}
	start := time.Now()
	r.emu.Subscribe(slowAppID, "o0", map[string]string{"TPL_crash": "accept"})
	pushed := waitPush(t, r.emu)
	if !pushed.Delivered || pushed.Tries[len(pushed.Tries)-1].Reply != "success" {
		t.Errorf("WeChat's push during the attack: %+v", pushed.Tries)
	}
	t.Logf("during the attack: /healthz answered in %v; the push in %v, %d tries", probes, time.Since(start), len(pushed.Tries))
	// The event is sent only if the push's credit reached the ledger.
	r.publish("notice.posted", "slow-e1", map[string]any{"user_id": "u0", "text": "t", "ref": "slow-e1"})
	if res := r.outcomes([]string{"slow-e1"})["slow-e1"]; res.Status != "sent" {
		t.Errorf("event during the attack: %+v, want sent", res)
	}

	a.stop()
	if open := a.waitShed(t); open > 0 {
		t.Errorf("%d slow connections still open 30 s after the attack stopped", open)
	}
	peakFDs, samples, hwm := watch.stop()
	if limit := baseFDs + slowBound + slowFDMargin; peakFDs > limit {
		t.Errorf("the child held up to %d descriptors, want at most %d (baseline %d + bound %d + %d)",
			peakFDs, limit, baseFDs, slowBound, slowFDMargin)
	}
	if status, err := httpGet(base + "/healthz"); err != nil || status != 200 {
		t.Errorf("/healthz after the attack: %d %v", status, err)
	}
	life := a.lifetimes()
	t.Logf("child: %d descriptors before, peak %d during the attack (%d samples); RSS %d KiB before, peak (VmHWM) %d KiB",
		baseFDs, peakFDs, samples, baseRSS, hwm)
	t.Logf("attack: %d slow connections closed by the server; lifetime median %v, p90 %v, max %v",
		len(life), life[len(life)/2], life[len(life)*9/10], life[len(life)-1])
	t.Logf("metrics: %s", strings.Join(httpMetrics(t, base, "wxbridge_http_"), "; "))
	r.stop()
}

// slowAttack keeps n connections open at once, each sending a callback
// request (or, one in four, its headers) a byte every 200 ms and replaced
// when the server closes it.
type slowAttack struct {
	addr    string
	stopped atomic.Bool
	wg      sync.WaitGroup
	open    atomic.Int64
	mu      sync.Mutex
	life    []time.Duration // dial to the server's close, of each closed connection
	leftOn  int             // connections the server did not close within a minute
}

func startSlowAttack(t *testing.T, addr string, n int) *slowAttack {
	t.Helper()
	a := &slowAttack{addr: addr}
	for i := 0; i < n; i++ {
		a.wg.Add(1)
		go a.attacker(i%4 == 3)
	}
	t.Cleanup(a.stop)
	return a
}

func (a *slowAttack) attacker(slowHeaders bool) {
	defer a.wg.Done()
	head := "POST /wechat/callback/main?signature=x&timestamp=1&nonce=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n"
	trickle := strings.Repeat("x", 4096)
	if slowHeaders {
		head, trickle = "POST /wechat/callback/main HTTP/1.1\r\n", strings.Repeat("X-Slow: y\r\n", 400)
	}
	for !a.stopped.Load() {
		c, err := net.DialTimeout("tcp", a.addr, 30*time.Second)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		start := time.Now()
		a.open.Add(1)
		closed := make(chan struct{})
		go func() { // the server's answer, if any, then its close
			_ = c.SetReadDeadline(time.Now().Add(time.Minute))
			_, _ = io.Copy(io.Discard, c)
			close(closed)
		}()
		_, _ = io.WriteString(c, head)
		shed := false
	trickling:
		for i := 0; i < len(trickle); i++ {
			select {
			case <-closed:
				shed = true
				break trickling
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := io.WriteString(c, trickle[i:i+1]); err != nil {
				<-closed
				shed = true
				break
			}
		}
		if !shed {
			<-closed
		}
		lived := time.Since(start)
		_ = c.Close()
		a.open.Add(-1)
		a.mu.Lock()
		if lived >= time.Minute {
			a.leftOn++
		} else {
			a.life = append(a.life, lived)
		}
		a.mu.Unlock()
	}
}

func (a *slowAttack) waitOpen(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for a.open.Load() < int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d attacking connections open after 30 s", a.open.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop makes the attackers stop opening connections.
func (a *slowAttack) stop() { a.stopped.Store(true) }

// waitShed waits up to 30 s (plus a minute for any connection the server
// never closes) for the server to close every attacking connection and
// returns how many it left open.
func (a *slowAttack) waitShed(t *testing.T) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for a.open.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	open := int(a.open.Load())
	a.wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	return max(open, a.leftOn)
}

func (a *slowAttack) lifetimes() []time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := slices.Clone(a.life)
	slices.Sort(out)
	return out
}

// processWatch samples a process's descriptors and memory.
type processWatch struct {
	done           chan struct{}
	wg             sync.WaitGroup
	peakFDs, peakN int
	hwm            int
}

func watchProcess(t *testing.T, pid int) *processWatch {
	t.Helper()
	w := &processWatch{done: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
				w.peakFDs = max(w.peakFDs, len(fds))
				w.peakN++
			}
			select {
			case <-w.done:
				w.hwm = statusKiB(pid, "VmHWM")
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// stop returns the peak descriptor count, the number of samples and the
// peak resident memory (KiB).
func (w *processWatch) stop() (peakFDs, samples, hwmKiB int) {
	close(w.done)
	w.wg.Wait()
	return w.peakFDs, w.peakN, w.hwm
}

func countFDs(t *testing.T, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// statusKiB is a "Name:   123 kB" line of /proc/<pid>/status.
func statusKiB(pid int, name string) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return -1
}

func httpGet(url string) (int, error) {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// httpMetrics returns the metric lines of /metrics that start with prefix.
func httpMetrics(t *testing.T, base, prefix string) []string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Errorf("metrics: %v", err)
		return nil
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			out = append(out, sc.Text())
		}
	}
	return out
}

// waitPush waits (up to 60 s: three tries of 5 s and more) for the
// emulator's first push to finish.
func waitPush(t *testing.T, emu *wechattest.Emulator) wechattest.Push {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if p := emu.Pushes(); len(p) > 0 {
			return p[0]
		}
		if time.Now().After(deadline) {
			t.Fatal("WeChat's push did not finish in 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
