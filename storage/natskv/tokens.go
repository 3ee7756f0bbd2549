package natskv

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

type tokenRecord struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// LoadToken returns the access token stored under key, or "" if none:
// one token for every bridge on the same state.
func (s *Store) LoadToken(ctx context.Context, key string) (string, time.Time, error) {
	if err := s.check(); err != nil {
		return "", time.Time{}, err
	}
	subj := s.n.accessToken(key)
	got, err := s.read(ctx, subj)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("read token %s: %w", printable(key), err)
	}
	e := got[subj]
	if !e.present {
		return "", time.Time{}, nil
	}
	var rec tokenRecord
	if err := json.Unmarshal(e.val, &rec); err != nil {
		return "", time.Time{}, fmt.Errorf("decode token %s: %w", printable(key), err)
	}
	return rec.Token, rec.ExpiresAt, nil
}

// SaveToken stores an access token under key.
func (s *Store) SaveToken(ctx context.Context, key, token string, expiresAt time.Time) error {
	if err := s.check(); err != nil {
		return err
	}
	data, _ := json.Marshal(tokenRecord{token, expiresAt})
	w := newWrites("k")
	w.put(s.n.accessToken(key), data, 0)
	if err := s.commit(ctx, w); err != nil {
		return fmt.Errorf("save token %s: %w", printable(key), err)
	}
	return nil
}
