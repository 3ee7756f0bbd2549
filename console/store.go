package console

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/storage"
)

// Store is the state the console reads: the admin API's reads (a subset of
// bridge.Store), the lookups of a person by openid and unionid, and an
// official account's followers (what the bridge reads to reach someone
// there). Every backend implements it.
type Store interface {
	Bindings(ctx context.Context, userID string) ([]storage.Binding, error)
	Binding(ctx context.Context, app, userID string) (storage.Binding, bool, error)
	// UserByOpenID is the user bound to openid in app.
	UserByOpenID(ctx context.Context, app, openid string) (string, bool, error)
	// BindingsByUnionID are the bindings, in any app, that carry unionid.
	BindingsByUnionID(ctx context.Context, unionid string) ([]storage.Binding, error)
	UserRoles(ctx context.Context, userID string) ([]storage.RoleGrant, error)
	RoleMembers(ctx context.Context, role, scope string) ([]storage.RoleGrant, error)
	Subscriptions(ctx context.Context, app, openid string) ([]storage.Subscription, error)
	EventSends(ctx context.Context, eventID string) ([]storage.SendRecord, error)
	EventDone(ctx context.Context, id string) (storage.EventRecord, bool, error)
	// Follower is what is known of openid's relation to the official
	// account app; FollowerByUnionID finds the person unionid there.
	Follower(ctx context.Context, app, openid string) (storage.Follower, bool, error)
	FollowerByUnionID(ctx context.Context, app, unionid string) (storage.Follower, bool, error)
}

// Rules is the rules in force and the last reload that was refused, as
// `serve` learns them: it calls Loaded when a rules file goes into force
// and Refused when a reload fails its checks.
type Rules struct {
	mu    sync.Mutex
	state RulesState
}

// RulesState is what the rules page shows.
type RulesState struct {
	Set      *rules.Set // nil until the first Loaded
	LoadedAt time.Time
	// Refused is the last reload refused since Set was loaded, or nil.
	Refused *Refusal
}

// Refusal is a reload that was refused: the previous rules kept running.
type Refusal struct {
	At     time.Time
	File   string
	Errors []string // one per problem, with its line and field
}

// Loaded records that set is in force from at on.
func (r *Rules) Loaded(set *rules.Set, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.state = RulesState{Set: set, LoadedAt: at}
}

// Refused records that a reload of file was refused with err at at.
func (r *Rules) Refused(file string, err error, at time.Time) {
	ref := &Refusal{At: at, File: file}
	var list rules.ErrorList
	if errors.As(err, &list) {
		for _, e := range list {
			ref.Errors = append(ref.Errors, e.Error())
		}
	} else if err != nil {
		ref.Errors = []string{err.Error()}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.state.Refused = ref
}

// State is the rules in force and the last refused reload.
func (r *Rules) State() RulesState {
	if r == nil {
		return RulesState{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

// InFlight is the work under way on this bridge.
type InFlight struct {
	Events      int // events being handled
	WeChatCalls int // WeChat calls waiting for an answer
}

// GaugesOf reads the in-flight work from the bridge's own gauges
// (wxbridge_events_in_flight, wxbridge_wechat_sends_in_flight) in g,
// usually the bridge's Registry: the console then needs nothing more from
// the bridge.
func GaugesOf(g prometheus.Gatherer) func() InFlight {
	return func() InFlight {
		var out InFlight
		families, _ := g.Gather() // a partial answer is still worth showing
		for _, f := range families {
			var dst *int
			switch f.GetName() {
			case "wxbridge_events_in_flight":
				dst = &out.Events
			case "wxbridge_wechat_sends_in_flight":
				dst = &out.WeChatCalls
			default:
				continue
			}
			*dst = int(gaugeSum(f.GetMetric()))
		}
		return out
	}
}

func gaugeSum(ms []*dto.Metric) float64 {
	var s float64
	for _, m := range ms {
		s += m.GetGauge().GetValue()
	}
	return s
}
