package bridge

import "sync"

// workers is a fixed set of long-lived goroutines that run jobs. The
// bridge's deep work (decoding, rendering, the state, the WeChat call) runs
// on them rather than on a goroutine started per event or per recipient: a
// fresh goroutine grows its stack by copying as the work deepens, which cost
// a tenth of the bridge's CPU at load; these keep theirs.
type workers struct {
	jobs chan func()
	wg   sync.WaitGroup
}

func startWorkers(n int) *workers {
	w := &workers{jobs: make(chan func())}
	w.wg.Add(n)
	for range n {
		go func() {
			defer w.wg.Done()
			for job := range w.jobs {
				job()
			}
		}()
	}
	return w
}

// do hands fn to a free worker, waiting until one is free.
func (w *workers) do(fn func()) { w.jobs <- fn }

// stop waits for the jobs under way and ends the workers; do must not be
// called after it.
func (w *workers) stop() {
	close(w.jobs)
	w.wg.Wait()
}
