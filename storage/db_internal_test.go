package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// A write that fails inside a shared transaction rolls the group back; the
// others are retried on their own and commit, and only the failing caller
// sees its error.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "x.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	boom := errors.New("boom")
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := db.update(ctx, func(tx *bolt.Tx) error {
				if i%30 == 0 {
					return boom
				}
				return tx.Bucket(bucketTokens).Put([]byte(fmt.Sprint(i)), []byte("v"))
			})
			if i%30 == 0 && !errors.Is(err, boom) {
				t.Errorf("write %d: %v, want boom", i, err)
			}
			if i%30 != 0 && err != nil {
				t.Errorf("write %d failed with its neighbour: %v", i, err)
			}
		}()
	}
	wg.Wait()
	_ = db.view(func(tx *bolt.Tx) error {
		for i := 0; i < 300; i++ {
			v := tx.Bucket(bucketTokens).Get([]byte(fmt.Sprint(i)))
			if (i%30 == 0) != (v == nil) {
				t.Errorf("key %d: %q", i, v)
			}
		}
		return nil
	})
}
