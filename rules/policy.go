package rules

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Policy is what a rule asks of the bridge besides sending. The rules
// package parses and checks policies; the bridge enforces them with its
// own state.
type Policy struct {
	// Delivery is at_least_once (default) or at_most_once: what to do with a
	// send that a crash left in doubt (sent again, or reported and not sent).
	Delivery string
	// QuietHours, when set, is a daily window in which the rule does not
	// send: it defers to the end of the window or drops the message.
	QuietHours *QuietHours
	// Dedupe, when set, sends one message per dedupe key (Rule.DedupeKey)
	// and recipient within Window; later ones are skipped as duplicates.
	Dedupe *Dedupe
	// Cap, when set, limits how often one user hears from this rule.
	Cap *FrequencyCap
}

// QuietHours is a daily window, read on the wall clock of Location. The
// window may cross midnight ("22:00-08:00").
type QuietHours struct {
	// Start and End are times of day, as offsets from midnight. End may be
	// 24h ("22:00-24:00").
	Start, End time.Duration
	Location   *time.Location
	// Action is QuietDefer (send when the window ends) or QuietDrop.
	Action string
}

// Check says whether t falls in the window and, if it does, when the
// window ends. The end is computed on the calendar of Location with
// time.Date, so a window across a daylight-saving change ends at the
// wall-clock time it names.
func (q *QuietHours) Check(t time.Time) (quiet bool, end time.Time) {
	t = t.In(q.Location)
	y, m, d := t.Date()
	tod := time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute +
		time.Duration(t.Second())*time.Second + time.Duration(t.Nanosecond())
	at := func(day int, off time.Duration) time.Time {
		return time.Date(y, m, d+day, int(off/time.Hour), int(off%time.Hour/time.Minute), 0, 0, q.Location)
	}
	if q.Start < q.End {
		if tod >= q.Start && tod < q.End {
			return true, at(0, q.End)
		}
		return false, time.Time{}
	}
	// Across midnight: quiet from Start to the end of the day and from
	// midnight to End.
	switch {
	case tod >= q.Start:
		return true, at(1, q.End)
	case tod < q.End:
		return true, at(0, q.End)
	}
	return false, time.Time{}
}

// String is the window as rules.yaml writes it: "22:00-08:00 Asia/Shanghai, defer".
func (q *QuietHours) String() string {
	return fmt.Sprintf("%s-%s %s, %s", clock(q.Start), clock(q.End), q.Location, q.Action)
}

func clock(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d", int(d/time.Hour), int(d%time.Hour/time.Minute))
}

// Dedupe sends one message per key and recipient within Window.
type Dedupe struct {
	Window time.Duration
}

// FrequencyCap means at most Max messages of this rule per user within any
// window of length Per (a sliding window: the bridge counts the rule's
// sends to the user in the last Per). Messages over the cap are skipped as
// rate_capped.
type FrequencyCap struct {
	Max int
	Per time.Duration
}

var windowRE = regexp.MustCompile(`^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$`)

// parseWindow reads "22:00-08:00".
func parseWindow(s string) (start, end time.Duration, err error) {
	m := windowRE.FindStringSubmatch(s)
	if m == nil {
		return 0, 0, fmt.Errorf("%q is not a window: want HH:MM-HH:MM, like 22:00-08:00", s)
	}
	tod := func(h, mi string) (time.Duration, error) {
		hh, _ := strconv.Atoi(h)
		mm, _ := strconv.Atoi(mi)
		if mm > 59 || hh > 24 || (hh == 24 && mm != 0) {
			return 0, fmt.Errorf("%s:%s is not a time of day", h, mi)
		}
		return time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute, nil
	}
	if start, err = tod(m[1], m[2]); err != nil {
		return 0, 0, err
	}
	if end, err = tod(m[3], m[4]); err != nil {
		return 0, 0, err
	}
	if start == 24*time.Hour {
		return 0, 0, fmt.Errorf("%q starts at 24:00: write 00:00", s)
	}
	if start == end || (start == 0 && end == 24*time.Hour) {
		return 0, 0, fmt.Errorf("%q is empty or the whole day: a rule that never sends wants removing, not quiet hours", s)
	}
	return start, end, nil
}

// parseDuration reads Go durations ("10m", "1h30m") and whole days ("7d",
// "1d12h"), because caps and dedupe windows are often days.
func parseDuration(src string) (time.Duration, error) {
	s := strings.TrimSpace(src)
	bad := fmt.Errorf("%q is not a duration (like 10m, 24h or 7d)", src)
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil || n < 0 || n > 3660 {
			return 0, bad
		}
		days, s = time.Duration(n)*24*time.Hour, s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, bad
	}
	return days + d, nil
}
