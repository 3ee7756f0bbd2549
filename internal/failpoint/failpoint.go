// Package failpoint lets tests stop the real process at chosen points, to
// prove what a crash there does (no lost recipient, no duplicate send).
//
// Failpoints are armed only through the WXBRIDGE_FAILPOINTS environment
// variable, read once at start: a comma-separated list of name=action or
// name=action@n (act on the n-th time the point is reached; default the
// first). Actions: kill (SIGKILL the process: no deferred function, no
// flush, as a power cut or the OOM killer would). When the variable is
// unset, Hit is one atomic load.
package failpoint

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

type point struct {
	action string
	at     int64
	hits   atomic.Int64
}

var (
	armed  atomic.Bool
	mu     sync.Mutex
	points map[string]*point
)

func init() { Arm(os.Getenv("WXBRIDGE_FAILPOINTS")) }

// Arm replaces the armed failpoints with spec (the WXBRIDGE_FAILPOINTS
// syntax). An empty spec disarms them all.
func Arm(spec string) {
	mu.Lock()
	defer mu.Unlock()
	points = map[string]*point{}
	for _, item := range strings.Split(spec, ",") {
		name, action, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || name == "" {
			continue
		}
		p := &point{action: action, at: 1}
		if a, n, ok := strings.Cut(action, "@"); ok {
			p.action = a
			if v, err := strconv.ParseInt(n, 10, 64); err == nil && v > 0 {
				p.at = v
			}
		}
		points[name] = p
	}
	armed.Store(len(points) > 0)
}

// Hit marks that the program reached the named point, and carries out the
// armed action if this is the time.
func Hit(name string) {
	if !armed.Load() {
		return
	}
	mu.Lock()
	p := points[name]
	mu.Unlock()
	if p == nil || p.hits.Add(1) != p.at {
		return
	}
	if p.action == "kill" {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way; never return into the program
	}
}
