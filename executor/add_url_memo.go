package executor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/builder-dev/builder/cache"
)

// storeURLMemo keeps the addURLRecord of each URL in the store's URLs area,
// one JSON file named after the URL's sha256 (the URL itself, which may
// hold credentials, is not written).
type storeURLMemo struct{ s CacheStore }

func (m storeURLMemo) name(url string) string {
	sum := sha256.Sum256([]byte(url))
	return hex.EncodeToString(sum[:]) + ".json"
}

// Get returns the record of url; a missing or unreadable one is none.
func (m storeURLMemo) Get(_ context.Context, url string) (addURLRecord, bool) {
	b, err := os.ReadFile(filepath.Join(m.s.AreaPath(cache.URLs), m.name(url)))
	if err != nil {
		return addURLRecord{}, false
	}
	var rec addURLRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return addURLRecord{}, false
	}
	return rec, true
}

// Put replaces the record of url, atomically.
func (m storeURLMemo) Put(ctx context.Context, url string, rec addURLRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return m.s.WriteAreaFile(ctx, cache.URLs, m.name(url), b)
}
