package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// `wxbridge state` asks a running serve through its admin API: serve holds
// the bbolt lock, so nothing else may open the file.
func cmdState(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("state", stderr, "state user ID | event ID | role ROLE [SCOPE]")
	admin := f.str("admin", "WXBRIDGE_ADMIN_URL", "http://127.0.0.1:8080", "base URL of the running wxbridge")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	var path string
	switch {
	case len(pos) == 2 && pos[0] == "user":
		path = "/v1/users/" + url.PathEscape(pos[1])
	case len(pos) == 2 && pos[0] == "event":
		path = "/v1/events/" + url.PathEscape(pos[1])
	case (len(pos) == 2 || len(pos) == 3) && pos[0] == "role":
		scope := ""
		if len(pos) == 3 {
			scope = pos[2]
		}
		path = "/v1/roles/" + url.PathEscape(pos[1]) + "?scope=" + url.QueryEscape(scope)
	default:
		return usagef("want: state user ID | state event ID | state role ROLE [SCOPE]")
	}
	token := os.Getenv("WXBRIDGE_ADMIN_TOKEN")
	if token == "" {
		return usagef("set WXBRIDGE_ADMIN_TOKEN to the token the running wxbridge was started with")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(*admin, "/")+path, nil)
	if err != nil {
		return &usageError{err}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("ask %s (is `wxbridge serve` running?): %w", *admin, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s: %s", resp.Status, e.Error)
		}
		return fmt.Errorf("%s", resp.Status)
	}
	_, err = stdout.Write(body)
	return err
}
