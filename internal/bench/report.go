package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what one scenario measured. Times are in milliseconds, rates
// per second, memory in MiB.
type Report struct {
	Scenario string `json:"scenario"`
	What     string `json:"what"`
	Error    string `json:"error,omitempty"`

	// Bridges is how many bridge processes shared the work, NATSNodes how
	// many NATS servers there were (3: a cluster, the state in JetStream
	// KV), WeChatLatencyMS how long the emulator took to answer a send.
	Bridges         int     `json:"bridges"`
	NATSNodes       int     `json:"nats_nodes"`
	WeChatLatencyMS float64 `json:"wechat_latency_ms"`

	Events int `json:"events"`
	// Recipients is the number of (event, recipient) pairs expected.
	Recipients int `json:"recipients"`
	// WeChatSends is how many sends the emulator accepted; WeChatRequests
	// counts every send request, failed ones included.
	WeChatSends    int `json:"wechat_sends"`
	WeChatRequests int `json:"wechat_requests"`
	// Seconds is first publish → last WeChat request.
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_sec"` // events / (first publish → last result)
	SendsPerSec  float64 `json:"sends_per_sec"`  // WeChat sends / Seconds
	PublishRate  int     `json:"publish_rate,omitempty"`

	Baseline *BaselineReport `json:"baseline,omitempty"`
	// Ratio is the bridge's sends/s over the baseline's.
	Ratio float64 `json:"ratio,omitempty"`
	// Scale is, in the cluster scenarios, the sends/s over one bridge's at
	// the same WeChat latency.
	Scale float64 `json:"scale_vs_one_bridge,omitempty"`

	ToWeChat Latency `json:"publish_to_wechat_ms"`
	ToResult Latency `json:"publish_to_result_ms"`

	// PeakRSSMiB is the largest bridge's peak; CPUSeconds what the bridges
	// used together, CPUByBridge each of several.
	PeakRSSMiB  float64   `json:"peak_rss_mib"`
	CPUSeconds  float64   `json:"cpu_seconds"`
	CPUByBridge []float64 `json:"cpu_by_bridge,omitempty"`
	// What the other processes on the machine used meanwhile: the NATS
	// servers (together, and each node of a cluster), and the bench itself
	// (emulator, publisher, results reader).
	NATSCPUSeconds  float64   `json:"nats_cpu_seconds"`
	NATSCPUByNode   []float64 `json:"nats_cpu_by_node,omitempty"`
	BenchCPUSeconds float64   `json:"bench_cpu_seconds"`
	// WeChatErrors counts the errcodes the emulator answered sends and
	// token requests with: injected faults, and 43108 when two sends to
	// one user overlapped (two bridges serving one user at once).
	WeChatErrors map[int]int `json:"wechat_errors,omitempty"`

	Lost              int `json:"lost"`
	Duplicates        int `json:"duplicates"`
	InDoubt           int `json:"in_doubt"`
	InDoubtDuplicates int `json:"in_doubt_duplicates"`
	// NoResult counts recipients WeChat received but whose result never
	// came (only possible when the run did not complete).
	NoResult int            `json:"no_result,omitempty"`
	Outcomes map[string]int `json:"outcomes"`

	Kills        int      `json:"bridge_kills,omitempty"`
	NATSRestarts int      `json:"nats_restarts,omitempty"`
	SetupSeconds float64  `json:"setup_seconds"`
	Incomplete   bool     `json:"incomplete,omitempty"`
	Targets      []Target `json:"targets,omitempty"`
	Notes        []string `json:"notes,omitempty"`
}

// BaselineReport is the minimal consumer's run on the same load.
type BaselineReport struct {
	Sends  int `json:"sends"`
	Failed int `json:"failed"`
	// FailedBy counts the failed sends by reason ("errcode 43108": two
	// events for one user posted at once, which the baseline does not
	// prevent; "transport").
	FailedBy    map[string]int `json:"failed_by,omitempty"`
	Seconds     float64        `json:"seconds"`
	SendsPerSec float64        `json:"sends_per_sec"`
	ToWeChat    Latency        `json:"publish_to_wechat_ms"`
	// CPUSeconds is the bench process (the consumer, the emulator and the
	// publisher) while the baseline ran; NATSCPUSeconds the NATS server.
	CPUSeconds     float64 `json:"cpu_seconds"`
	NATSCPUSeconds float64 `json:"nats_cpu_seconds"`
}

// Latency summarises durations in milliseconds.
type Latency struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Target is one of the targets, measured.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

func fmtf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

func (r *Report) target(name, want string, met bool, gotFormat string, got ...any) {
	r.Targets = append(r.Targets, Target{Name: name, Want: want, Got: fmt.Sprintf(gotFormat, got...), Met: met})
}

func (r *Report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func latencyOf(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	at := func(q float64) float64 {
		i := int(q*float64(len(ds))+0.5) - 1
		i = max(0, min(i, len(ds)-1))
		return ms(ds[i])
	}
	return Latency{N: len(ds), P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: ms(ds[len(ds)-1])}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (l Latency) String() string {
	if l.N == 0 {
		return "-"
	}
	return fmt.Sprintf("%s/%s/%s", num(l.P50), num(l.P95), num(l.P99))
}

// num prints a millisecond figure with the precision it deserves.
func num(v float64) string {
	switch {
	case v < 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// PrintTable writes the reports as a table, then the targets and notes.
func PrintTable(w io.Writer, reports []*Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tevents\tsends\tevents/s\tsends/s\tbaseline/s\tratio\t→WeChat p50/95/99 ms\t→result p50/95/99 ms\tRSS MiB\tCPU s\tlost\tdup\tin-doubt (dup)\t")
	for _, r := range reports {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t%d\t\t\t\t\t\t\t\t\t\t\t\t\t\n", r.Scenario, r.Events)
			continue
		}
		base, ratio := "-", "-"
		if r.Baseline != nil {
			base, ratio = fmt.Sprintf("%.0f", r.Baseline.SendsPerSec), fmt.Sprintf("%.2f", r.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t%.0f\t%.1f\t%d\t%d\t%d (%d)\t\n",
			r.Scenario, r.Events, r.WeChatSends, r.EventsPerSec, r.SendsPerSec, base, ratio, r.ToWeChat, r.ToResult,
			r.PeakRSSMiB, r.CPUSeconds, r.Lost, r.Duplicates, r.InDoubt, r.InDoubtDuplicates)
	}
	tw.Flush()
	fmt.Fprintln(w)
	printClusterTable(w, reports)
	for _, r := range reports {
		var lines []string
		if r.Error != "" {
			lines = append(lines, "ERROR: "+r.Error)
		}
		if r.Baseline != nil {
			lines = append(lines, fmt.Sprintf("baseline: %d sends in %.2f s, %.0f sends/s, →WeChat p50/95/99 %s ms; CPU: consumer+emulator %.1f s, NATS %.1f s",
				r.Baseline.Sends, r.Baseline.Seconds, r.Baseline.SendsPerSec, r.Baseline.ToWeChat, r.Baseline.CPUSeconds, r.Baseline.NATSCPUSeconds))
			if r.Baseline.Failed > 0 {
				lines = append(lines, fmt.Sprintf("baseline: %d sends failed %v (it neither retries nor sends to one user at a time)",
					r.Baseline.Failed, r.Baseline.FailedBy))
			}
		}
		if r.Error != "" {
			fmt.Fprintf(w, "%s (%s)\n", r.Scenario, r.What)
			for _, l := range append(lines, r.Notes...) {
				fmt.Fprintf(w, "  %s\n", l)
			}
			continue
		}
		lines = append(lines, "outcomes: "+outcomeList(r.Outcomes))
		if r.Kills > 0 || r.NATSRestarts > 0 {
			lines = append(lines, fmt.Sprintf("bridge SIGKILLed %d times, NATS restarted %d times", r.Kills, r.NATSRestarts))
		}
		if r.WeChatRequests > r.WeChatSends {
			lines = append(lines, fmt.Sprintf("WeChat requests %d for %d accepted sends (the rest failed by fault injection)", r.WeChatRequests, r.WeChatSends))
		}
		bridges, nats := "bridge", "NATS"
		if len(r.CPUByBridge) > 0 {
			bridges = fmt.Sprintf("%d bridges (%s s)", len(r.CPUByBridge), nodeList(r.CPUByBridge))
		}
		if len(r.NATSCPUByNode) > 0 {
			nats = fmt.Sprintf("%d NATS nodes (%s s)", len(r.NATSCPUByNode), nodeList(r.NATSCPUByNode))
		}
		lines = append(lines, fmt.Sprintf("CPU: %s %.1f s (%.0f µs per send), %s %.1f s (%.0f µs per send), bench+emulator %.1f s, in %.1f s; setup %.1f s",
			bridges, r.CPUSeconds, perSend(r.CPUSeconds, r), nats, r.NATSCPUSeconds, perSend(r.NATSCPUSeconds, r), r.BenchCPUSeconds, r.Seconds, r.SetupSeconds))
		if n := r.WeChatErrors[43108]; n > 0 {
			lines = append(lines, fmt.Sprintf("WeChat refused %d sends with 43108 (two sends to one user at once)", n))
		}
		for _, t := range r.Targets {
			mark := "MET "
			if !t.Met {
				mark = "MISS"
			}
			lines = append(lines, fmt.Sprintf("%s %s: %s (want %s)", mark, t.Name, t.Got, t.Want))
		}
		lines = append(lines, r.Notes...)
		fmt.Fprintf(w, "%s (%s)\n", r.Scenario, r.What)
		for _, l := range lines {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
}

// printClusterTable writes, for the cluster scenarios, what more bridges
// bought and what a send cost each kind of process.
func printClusterTable(w io.Writer, reports []*Report) {
	var rows []*Report
	for _, r := range reports {
		if r.NATSNodes > 1 && r.Error == "" {
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "cluster\tbridges\tWeChat ms\tsends/s\t× 1 bridge\tbridge µs/send\tNATS µs/send\tNATS CPU s by node\tbridge CPU s\tseconds\t")
	for _, r := range rows {
		scale := "-"
		if r.Scale > 0 {
			scale = fmt.Sprintf("%.2f", r.Scale)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%s\t%.0f\t%.0f\t%s\t%.1f\t%.1f\t\n", r.Scenario, r.Bridges, r.WeChatLatencyMS, r.SendsPerSec, scale,
			perSend(r.CPUSeconds, r), perSend(r.NATSCPUSeconds, r), nodeList(r.NATSCPUByNode), r.CPUSeconds, r.Seconds)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// perSend is CPU seconds over the run's sends, in microseconds.
func perSend(seconds float64, r *Report) float64 {
	return 1e6 * seconds / float64(max(1, r.WeChatSends))
}

func nodeList(secs []float64) string {
	parts := make([]string, len(secs))
	for i, s := range secs {
		parts[i] = fmt.Sprintf("%.1f", s)
	}
	return strings.Join(parts, "/")
}

func outcomeList(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// WriteJSON writes the reports to path, indented.
func WriteJSON(path string, reports []*Report) error {
	data, err := json.MarshalIndent(reports, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
