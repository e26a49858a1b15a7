package router

import (
	"encoding/json"
	"testing"
)

// BenchmarkCheckPutArgs is the argument check of one Manta putObject, which
// every put pays before it reaches a shard.
func BenchmarkCheckPutArgs(b *testing.B) {
	v := `{"dirname":"/a/stor/d","key":"/a/stor/d/o","headers":{"x":"y"},"mtime":1700000000000,"name":"o","creator":"a","owner":"a","roles":[],"type":"object","contentLength":1024,"contentMD5":"abcdefabcdefabcdefabcd==","contentType":"application/octet-stream","etag":"0f7e1b1c-1b9e-4c43-8c5e-9d0e0f0e0f0e","objectId":"0f7e1b1c-1b9e-4c43-8c5e-9d0e0f0e0f0e","sharks":[{"datacenter":"dc1","manta_storage_id":"1.stor"},{"datacenter":"dc1","manta_storage_id":"2.stor"}]}`
	args := []json.RawMessage{json.RawMessage(`"manta"`), json.RawMessage(`"/a/stor/d/o"`), json.RawMessage(v), json.RawMessage(`{"req_id":"0f7e1b1c-1b9e-4c43-8c5e-9d0e0f0e0f0e","etag":null,"headers":{"x-muskie-prev-metadata":{"objectId":"x"}}}`)}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if e := checkMorayArgs("putObject", args); e != nil {
			b.Fatal(e)
		}
	}
}
