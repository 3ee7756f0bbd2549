package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/storage"
)

// `wxbridge import` loads bindings or roles for a first deployment. Rows go
// through the same NATS commands a running bridge serves, so an import
// works against a live system and is checked like any other command.
func cmdImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("import", stderr, "import bindings FILE.csv | roles FILE.csv\n\n"+
		"bindings.csv columns: app,user_id,openid[,unionid]\n"+
		"roles.csv columns:    user_id,role,scope[,action]   (action: grant, the default, or revoke)\n"+
		"The first row is a header naming the columns.")
	url := f.str("nats", "WXBRIDGE_NATS_URL", defaultNATS, "NATS server URL")
	var auth natsAuth
	auth.register(f)
	prefix := f.str("prefix", "WXBRIDGE_PREFIX", "wxbridge", "subject prefix of the bridge's commands")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || (pos[0] != "bindings" && pos[0] != "roles") {
		return usagef("want: import bindings FILE.csv | import roles FILE.csv")
	}
	file, err := os.Open(pos[1])
	if err != nil {
		return &usageError{err}
	}
	defer file.Close()
	rows, err := readCSV(file, pos[0])
	if err != nil {
		return &usageError{fmt.Errorf("%s: %w", pos[1], err)}
	}
	nc, err := dial(*url, &auth)
	if err != nil {
		return err
	}
	defer nc.Close()
	ok, failed := 0, 0
	for _, row := range rows {
		if err := importRow(ctx, nc, *prefix, pos[0], row.fields); err != nil {
			failed++
			fmt.Fprintf(stderr, "%s:%d: %v\n", pos[1], row.line, err)
			continue
		}
		ok++
	}
	fmt.Fprintf(stdout, "imported %d %s, %d failed\n", ok, pos[0], failed)
	if failed > 0 {
		return fmt.Errorf("%d rows failed", failed)
	}
	return nil
}

type csvRow struct {
	line   int
	fields map[string]string
}

var importColumns = map[string][]string{
	"bindings": {"app", "user_id", "openid"},
	"roles":    {"user_id", "role"},
}

func readCSV(r io.Reader, kind string) ([]csvRow, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	for i := range header {
		header[i] = strings.ToLower(strings.TrimSpace(header[i]))
	}
	for _, need := range importColumns[kind] {
		found := false
		for _, h := range header {
			found = found || h == need
		}
		if !found {
			return nil, fmt.Errorf("header %v has no %q column", header, need)
		}
	}
	var rows []csvRow
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return rows, nil
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			return nil, err
		}
		fields := map[string]string{}
		for i, h := range header {
			if i < len(rec) {
				fields[h] = strings.TrimSpace(rec[i])
			}
		}
		rows = append(rows, csvRow{line: line, fields: fields})
	}
}

func importRow(ctx context.Context, nc *nats.Conn, prefix, kind string, f map[string]string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if kind == "bindings" {
		body, _ := json.Marshal(bridge.BindRequest{App: f["app"], UserID: f["user_id"], OpenID: f["openid"], UnionID: f["unionid"]})
		msg, err := nc.RequestWithContext(ctx, prefix+".cmd.bind", body)
		if err != nil {
			return fmt.Errorf("bind %s: %w", f["user_id"], err)
		}
		var reply bridge.BindReply
		if err := json.Unmarshal(msg.Data, &reply); err != nil {
			return fmt.Errorf("bind %s: bad reply: %w", f["user_id"], err)
		}
		if reply.Error != "" {
			return errors.New(reply.Error)
		}
		return nil
	}
	role := []storage.Role{{Role: f["role"], Scope: f["scope"]}}
	req := bridge.RolesRequest{UserID: f["user_id"]}
	switch strings.ToLower(f["action"]) {
	case "", "grant":
		req.Grant = role
	case "revoke":
		req.Revoke = role
	default:
		return fmt.Errorf("action %q: want grant or revoke", f["action"])
	}
	body, _ := json.Marshal(req)
	msg, err := nc.RequestWithContext(ctx, prefix+".cmd.roles", body)
	if err != nil {
		return fmt.Errorf("roles of %s: %w", f["user_id"], err)
	}
	var reply bridge.OKReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return fmt.Errorf("roles of %s: bad reply: %w", f["user_id"], err)
	}
	if reply.Error != "" {
		return errors.New(reply.Error)
	}
	return nil
}
