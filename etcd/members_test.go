package etcd_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/etcd/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Three members, each with its own data directory and ports, form one
// cluster: a write through one member is read through another, and the
// cluster keeps serving with one member stopped.
func TestThreeMemberCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	var ms []etcd.Member
	var cluster []etcd.Peer
	for i := 1; i <= 3; i++ {
		m := etcd.Member{
			Name: fmt.Sprintf("m%d", i), Dir: filepath.Join(dir, fmt.Sprintf("m%d", i)),
			ClientPort: etcdtest.FreePort(t), PeerPort: etcdtest.FreePort(t),
			LogFile: filepath.Join(dir, fmt.Sprintf("m%d.log", i)),
		}
		ms = append(ms, m)
		cluster = append(cluster, etcd.Peer{Name: m.Name, PeerURL: etcd.PeerURL("", m.PeerPort)})
	}
	running := make([]*etcd.Embedded, 3)
	for i := range ms {
		ms[i].Cluster = cluster
		e, err := etcd.StartMember(ms[i])
		if err != nil {
			t.Fatal(err)
		}
		running[i] = e
	}
	defer func() {
		for _, e := range running {
			if e != nil {
				e.Close()
			}
		}
	}()
	// No member serves before a quorum has started; wait for all together.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, e := range running {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = e.Wait(ctx, 30*time.Second) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	client := func(i int) *clientv3.Client {
		cli, err := etcd.Connect(ctx, running[i].ClientURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	c0, c2 := client(0), client(2)
	if _, err := c0.Put(ctx, etcd.Prefix+"test/a", "1"); err != nil {
		t.Fatal(err)
	}
	if r, err := c2.Get(ctx, etcd.Prefix+"test/a"); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "1" {
		t.Fatalf("read through another member: %v %v", r, err)
	}

	urls := []string{running[0].ClientURL, running[1].ClientURL, running[2].ClientURL}
	leaders := 0
	for _, h := range etcd.Health(ctx, c2, urls) {
		if !h.Answers {
			t.Errorf("%s does not answer: %s", h.ClientURL, h.Error)
		}
		if h.Leader {
			leaders++
		}
	}
	if leaders != 1 {
		t.Fatalf("%d leaders, want 1", leaders)
	}

	// Stop the leader: the other two elect one and keep serving, and a
	// client given every member connects though the first is down.
	lead := etcd.Leader(ctx, c2, urls)
	var stopped int
	for i, u := range urls {
		if u == lead {
			stopped = i
		}
	}
	running[stopped].Close()
	running[stopped] = nil
	order := append([]string{urls[stopped]}, urls...)
	all, err := etcd.Connect(ctx, order[0]+","+order[1]+","+order[2]+","+order[3])
	if err != nil {
		t.Fatalf("connect with the first member down: %v", err)
	}
	defer all.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		wctx, c := context.WithTimeout(ctx, 2*time.Second)
		_, err := all.Put(wctx, etcd.Prefix+"test/b", "2")
		c()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write with one member stopped: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	other := client((stopped + 1) % 3)
	if r, err := other.Get(ctx, etcd.Prefix+"test/b"); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "2" {
		t.Fatalf("read after a member stopped: %v %v", r, err)
	}
	health := etcd.Health(ctx, other, urls)
	if health[stopped].Answers {
		t.Errorf("stopped member %s answers", urls[stopped])
	}
	if etcd.Leader(ctx, other, urls) == "" {
		t.Errorf("no leader among the two left")
	}
}
