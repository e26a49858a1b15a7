// Package load is the RFD's mlive made into a proof: it drives mixed object
// traffic through the routers, records every acknowledged write in a
// ledger, and verifies afterwards that each key's last acknowledged write is
// what the shard that owns it holds.
package load

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// Status of a ledger entry.
const (
	Acked   = "ok"      // the router acknowledged the write
	Unknown = "unknown" // the write may or may not have happened (connection lost, outcome unknown)
)

// Entry is one write in the ledger. For a put, Etag and Seq identify the
// value written; a delete leaves the key absent.
type Entry struct {
	Time   int64  `json:"t"` // unix nanoseconds when the answer came
	Op     string `json:"op"`
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	Etag   string `json:"etag,omitempty"`
	Seq    int64  `json:"seq,omitempty"`
	Status string `json:"status"`
}

// ReadLedger reads a ledger file, one JSON entry per line.
func ReadLedger(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readLedger(f)
}

func readLedger(r io.Reader) ([]Entry, error) {
	var out []Entry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("ledger line %d: %w", line, err)
		}
		if e.Op != "put" && e.Op != "delete" || e.Key == "" || e.Bucket == "" || (e.Status != Acked && e.Status != Unknown) {
			return nil, fmt.Errorf("ledger line %d: not a ledger entry", line)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}
