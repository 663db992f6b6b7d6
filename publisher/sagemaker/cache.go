package sagemaker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/linkedge/linkedge/internal/atomicfile"
)

// cacheSchema names the cache file's format. Version 1 files are read
// without their problems: they were judged when a bundle's metadata.json
// had to give the registry's version, and an artifact refused only for
// that is good now (the registry's version is the authority).
const (
	cacheSchema   = "linkedge.sagemaker-artifacts/v2"
	cacheSchemaV1 = "linkedge.sagemaker-artifacts/v1"
)

// maxCacheEntries bounds the cache; the oldest entries are dropped first.
const maxCacheEntries = 4096

// artifactCache remembers, per model package ARN and S3 ETag, what reading
// the artifact found: its digest and size, or why it is not a usable
// bundle. Reading a 1 GiB artifact on every poll would be absurd; an ETag
// changes whenever the object's bytes do, so the pair identifies the bytes.
// A bad artifact is remembered too, so it is not downloaded again until its
// ETag changes (someone uploaded a fixed one).
//
// With a file, the cache survives restarts; the file is only an
// optimization, so a missing or unreadable one is an empty cache.
type artifactCache struct {
	path string

	mu      sync.Mutex
	entries map[string]cacheEntry
	order   []string // insertion order, for eviction
}

type cacheEntry struct {
	SHA256    string `json:"sha256,omitempty"`
	Size      int64  `json:"size,omitempty"`
	VersionID string `json:"version_id,omitempty"`
	// Problem is set instead of SHA256 for an artifact that is not a valid
	// bundle for its package.
	Problem string `json:"problem,omitempty"`
}

type cacheFile struct {
	Schema  string                `json:"schema"`
	Entries map[string]cacheEntry `json:"entries"`
	Order   []string              `json:"order"`
}

func newArtifactCache(path string) (*artifactCache, error) {
	c := &artifactCache{path: path, entries: map[string]cacheEntry{}}
	if path == "" {
		return c, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read artifact cache: %w", err)
	}
	var f cacheFile
	if err := json.Unmarshal(data, &f); err != nil || (f.Schema != cacheSchema && f.Schema != cacheSchemaV1) {
		// A damaged cache costs one download per artifact, nothing more.
		return c, nil
	}
	for _, k := range f.Order {
		if e, ok := f.Entries[k]; ok && (f.Schema == cacheSchema || e.Problem == "") {
			c.entries[k] = e
			c.order = append(c.order, k)
		}
	}
	return c, nil
}

func cacheKey(arn, etag string) string { return arn + " " + etag }

func (c *artifactCache) get(arn, etag string) (cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[cacheKey(arn, etag)]
	return e, ok
}

// put records e; it returns an error only if the file could not be
// written (the entry is kept in memory all the same).
func (c *artifactCache) put(arn, etag string, e cacheEntry) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := cacheKey(arn, etag)
	if _, ok := c.entries[k]; !ok {
		c.order = append(c.order, k)
	}
	c.entries[k] = e
	for len(c.order) > maxCacheEntries {
		delete(c.entries, c.order[0])
		c.order = c.order[1:]
	}
	if c.path == "" {
		return nil
	}
	return atomicfile.WriteJSON(c.path, cacheFile{Schema: cacheSchema, Entries: c.entries, Order: c.order}, 0o644)
}
