package storage

import (
	"context"
	"time"

	bolt "go.etcd.io/bbolt"
)

type tokenRecord struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// LoadToken returns the access token stored under key, or "" if none.
func (db *DB) LoadToken(_ context.Context, k string) (string, time.Time, error) {
	var rec tokenRecord
	err := db.view(func(tx *bolt.Tx) error {
		_, err := getJSON(tx.Bucket(bucketTokens), []byte(k), &rec)
		return err
	})
	return rec.Token, rec.ExpiresAt, err
}

// SaveToken stores an access token under key.
func (db *DB) SaveToken(ctx context.Context, k, token string, expiresAt time.Time) error {
	return db.update(ctx, func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(bucketTokens), []byte(k), tokenRecord{token, expiresAt})
	})
}
