package main

import (
	"context"

	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/zookeeper"
)

// dialDumpZnode is the orchestrator's ZooKeeper client for the dump lock.
func dialDumpZnode(ctx context.Context, servers []string, path string) (orchestrator.DumpZnode, error) {
	l, err := zookeeper.Dial(ctx, servers, path)
	if err != nil {
		return nil, err // not a typed nil inside the interface
	}
	return l, nil
}
