package storage_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/wxbridge/wxbridge/bridge"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/storage/storagetest"
)

// The bbolt backend is the bridge's whole state contract: checked by the
// compiler, not at run time.
var _ bridge.Store = (*storage.DB)(nil)

func TestContract(t *testing.T) {
	storagetest.Run(t, storagetest.Backend{Sweeps: true, Open: func(t *testing.T, c *storagetest.Clock, hook storage.LedgerHook) storagetest.Store {
		db, err := storage.Open(filepath.Join(t.TempDir(), "wxbridge.db"), storage.Options{Now: c.Now, LedgerHook: hook})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}})
}

func TestReopenKeepsState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wxbridge.db")
	ctx := context.Background()
	db, err := storage.Open(path, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Bind(ctx, storage.Binding{App: "main", UserID: "u1", OpenID: "o1"}); err != nil {
		t.Fatal(err)
	}
	if err := db.SaveToken(ctx, "wx/stable", "T", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = storage.Open(path, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if b, ok, _ := db.Binding(ctx, "main", "u1"); !ok || b.OpenID != "o1" {
		t.Fatalf("binding after reopen: %+v %v", b, ok)
	}
	if tok, _, _ := db.LoadToken(ctx, "wx/stable"); tok != "T" {
		t.Fatalf("token after reopen: %q", tok)
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wxbridge.db")
	db, err := storage.Open(path, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = storage.Open(path, storage.Options{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, storage.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wxbridge.db")
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		m, err := tx.CreateBucketIfNotExists([]byte("meta"))
		if err != nil {
			return err
		}
		return m.Put([]byte("schema_version"), []byte{0, 0, 0, 0, 0, 0, 0, 99})
	})
	b.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := storage.Open(path, storage.Options{}); err == nil {
		t.Fatal("a database from a newer wxbridge was opened")
	}
}

// Writes from many goroutines share commits; each caller learns whether its
// own write committed, and all of them did.
func TestGroupCommit(t *testing.T) {
	db, err := storage.Open(filepath.Join(t.TempDir(), "wxbridge.db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 500; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := db.Bind(ctx, storage.Binding{App: "main", UserID: fmt.Sprint("u", i), OpenID: fmt.Sprint("o", i)}); err != nil {
				t.Error(err)
			}
		}()
	}
	// A write that fails must not fail the writes it shared a commit with.
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := db.Bind(ctx, storage.Binding{App: "main", UserID: fmt.Sprint("bad", i)}); !errors.Is(err, storage.ErrInvalid) {
				t.Errorf("invalid bind: %v", err)
			}
		}()
	}
	wg.Wait()
	for i := 0; i < 500; i++ {
		if _, ok, err := db.Binding(ctx, "main", fmt.Sprint("u", i)); err != nil || !ok {
			t.Fatalf("binding u%d lost: %v", i, err)
		}
	}
}

func TestWritesAfterCloseFail(t *testing.T) {
	db, err := storage.Open(filepath.Join(t.TempDir(), "wxbridge.db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := db.Bind(context.Background(), storage.Binding{App: "a", UserID: "u", OpenID: "o"}); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("bind after close: %v", err)
	}
}
