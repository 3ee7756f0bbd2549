package bridge

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the bridge's Prometheus series. Label values are bounded:
// statuses, reasons and WeChat errcodes are small fixed sets, apps and
// event types come from the rules.
type metrics struct {
	events       *prometheus.CounterVec   // outcome: done, retry, dead, duplicate, no_match, error
	results      *prometheus.CounterVec   // status, reason, errcode
	wechat       *prometheus.HistogramVec // WeChat send latency by app and outcome
	retries      prometheus.Counter
	dead         prometheus.Counter
	inFlight     prometheus.Gauge
	sending      prometheus.Gauge
	configErrs   *prometheus.CounterVec // app, errcode: the ones an operator must fix
	pushes       *prometheus.CounterVec // app, event, outcome
	deferred     prometheus.Counter
	outboxFails  prometheus.Counter
	scheduleErrs prometheus.Counter
	// followerLists counts official accounts' follower listings by app
	// and outcome (ok, error).
	followerLists *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wxbridge_events_total",
			Help: "Event deliveries handled, by outcome (done, retry, dead, duplicate, no_match, error)."}, []string{"outcome"}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wxbridge_results_total",
			Help: "Recipient outcomes, by status, reason and WeChat errcode."}, []string{"status", "reason", "errcode"}),
		wechat: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "wxbridge_wechat_send_seconds",
			Help:    "Latency of subscribe/send calls, including the client's token refresh and retry.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"app", "outcome"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "wxbridge_retries_total",
			Help: "Recipients left for a retry after a transient WeChat failure."}),
		dead: prometheus.NewCounter(prometheus.CounterOpts{Name: "wxbridge_dead_letters_total",
			Help: "Events sent to the dead-letter subject."}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wxbridge_events_in_flight",
			Help: "Events being handled now."}),
		sending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wxbridge_wechat_sends_in_flight",
			Help: "WeChat calls under way now."}),
		configErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wxbridge_config_errors_total",
			Help: "Sends WeChat refused for a reason in the configuration (template id, page, data, ban). Alert on any."}, []string{"app", "errcode"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wxbridge_pushes_total",
			Help: "WeChat push callbacks, by app, event and outcome (applied, duplicate, unknown)."}, []string{"app", "event", "outcome"}),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{Name: "wxbridge_deferred_total",
			Help: "Sends deferred to the end of quiet hours."}),
		outboxFails: prometheus.NewCounter(prometheus.CounterOpts{Name: "wxbridge_outbox_publish_failures_total",
			Help: "Failed attempts to publish queued results (they are retried)."}),
		scheduleErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "wxbridge_schedule_errors_total",
			Help: "Failures to read, run or settle deferred sends (the work stays in the schedule and is retried)."}),
		followerLists: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wxbridge_follower_listings_total",
			Help: "Listings of an official account's followers, made to find people who followed before wxbridge heard it, by app and outcome."},
			[]string{"app", "outcome"}),
	}
	reg.MustRegister(m.events, m.results, m.wechat, m.retries, m.dead, m.inFlight, m.sending, m.configErrs, m.pushes,
		m.deferred, m.outboxFails, m.scheduleErrs, m.followerLists)
	return m
}

func (m *metrics) result(status, reason string, errcode int) {
	m.results.WithLabelValues(status, reason, strconv.Itoa(errcode)).Inc()
}
