package wechattest

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Faults make the emulator misbehave the ways WeChat and the network do.
// The rates are probabilities; one draw per request to a WeChat path
// (never /_dev/) picks at most one of them, so they add up and their sum
// should stay at most 1.
type Faults struct {
	// Latency is added to every request; Jitter adds up to that much more,
	// drawn uniformly. On send the delay is spent while the recipient is
	// held, so concurrent sends to one openid meet 43108 as they would.
	Latency time.Duration
	Jitter  time.Duration
	// SystemErrorRate answers errcode -1 "system error" without acting.
	SystemErrorRate float64
	// HTTP500Rate answers HTTP 500 without acting.
	HTTP500Rate float64
	// DropRate closes the connection without acting or answering.
	DropRate float64
	// LostReplyRate carries the request out (a send is accepted and
	// recorded) and then closes the connection without answering: the
	// caller's outcome is unknown although the send happened.
	LostReplyRate float64
	// TimeoutRate holds the request for HangFor, or until the client gives
	// up, and then carries it out and answers (to nobody, usually).
	TimeoutRate float64
	// HangFor is how long TimeoutRate holds a request. Default 1 minute,
	// longer than any sensible client timeout.
	HangFor time.Duration
	// QuotaExhausted answers every send 45009, as when the daily quota is
	// used up.
	QuotaExhausted bool
	// InvalidateTokenEvery > 0 invalidates the app's tokens after every N
	// successful sends, so the next call gets 40001 and must fetch again.
	InvalidateTokenEvery int
	// TemplateJobFailRate is the share of accepted template messages whose
	// TEMPLATESENDJOBFINISH says "failed: system failed" (送达由于其他原因
	// 失败): accepted by the API, never delivered. Drawn once per message,
	// apart from the rates above, whatever Paths says.
	TemplateJobFailRate float64
	// Paths limits latency and the rates to these paths (PathSend...);
	// empty means every WeChat path.
	Paths []string
	// Seed makes the draws repeatable (for one goroutine's sequence of
	// requests). 0 draws a random seed.
	Seed int64
}

type outcome int

const (
	outcomeNormal outcome = iota
	outcomeSystemError
	outcomeHTTP500
	outcomeDrop
	outcomeLostReply
	outcomeTimeout
)

// faultState is an immutable Faults plus the random source drawing it.
type faultState struct {
	f     Faults
	paths map[string]bool
	hang  time.Duration
	rates bool

	mu  sync.Mutex
	rnd *rand.Rand
}

// SetFaults replaces the faults in force; the zero Faults turns them off.
// It is safe to call while requests are served.
func (e *Emulator) SetFaults(f Faults) {
	if f.isZero() {
		e.faults.Store(nil)
		return
	}
	s := &faultState{f: f, hang: f.HangFor}
	if s.hang <= 0 {
		s.hang = time.Minute
	}
	if len(f.Paths) > 0 {
		s.paths = map[string]bool{}
		for _, p := range f.Paths {
			s.paths[p] = true
		}
	}
	s.rates = f.SystemErrorRate > 0 || f.HTTP500Rate > 0 || f.DropRate > 0 || f.LostReplyRate > 0 || f.TimeoutRate > 0
	seed := uint64(f.Seed)
	if seed == 0 {
		seed = rand.Uint64()
	}
	s.rnd = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	e.faults.Store(s)
}

// Faults returns the faults in force.
func (e *Emulator) Faults() Faults {
	if s := e.faults.Load(); s != nil {
		f := s.f
		f.Paths = append([]string(nil), f.Paths...)
		return f
	}
	return Faults{}
}

func (f Faults) isZero() bool {
	return f.Latency <= 0 && f.Jitter <= 0 && f.SystemErrorRate <= 0 && f.HTTP500Rate <= 0 && f.DropRate <= 0 &&
		f.LostReplyRate <= 0 && f.TimeoutRate <= 0 && !f.QuotaExhausted && f.InvalidateTokenEvery <= 0 &&
		f.TemplateJobFailRate <= 0
}

func (s *faultState) applies(path string) bool {
	return s.paths == nil || s.paths[path]
}

func (s *faultState) latency() time.Duration {
	d := s.f.Latency
	if s.f.Jitter > 0 {
		s.mu.Lock()
		d += time.Duration(s.rnd.Int64N(int64(s.f.Jitter) + 1))
		s.mu.Unlock()
	}
	return d
}

func (s *faultState) draw() outcome {
	if !s.rates {
		return outcomeNormal
	}
	s.mu.Lock()
	u := s.rnd.Float64()
	s.mu.Unlock()
	for _, o := range [...]struct {
		rate float64
		out  outcome
	}{
		{s.f.SystemErrorRate, outcomeSystemError},
		{s.f.HTTP500Rate, outcomeHTTP500},
		{s.f.DropRate, outcomeDrop},
		{s.f.LostReplyRate, outcomeLostReply},
		{s.f.TimeoutRate, outcomeTimeout},
	} {
		if u < o.rate {
			return o.out
		}
		u -= o.rate
	}
	return outcomeNormal
}

// quotaExhausted and invalidateEvery are the faults the send handler asks
// about; they apply whatever Paths says.
func (e *Emulator) quotaExhausted() bool {
	s := e.faults.Load()
	return s != nil && s.f.QuotaExhausted
}

func (e *Emulator) invalidateEvery() int {
	if s := e.faults.Load(); s != nil {
		return s.f.InvalidateTokenEvery
	}
	return 0
}

// templateJobFails draws whether an accepted template message fails to be
// delivered (Faults.TemplateJobFailRate).
func (e *Emulator) templateJobFails() bool {
	s := e.faults.Load()
	if s == nil || s.f.TemplateJobFailRate <= 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rnd.Float64() < s.f.TemplateJobFailRate
}
