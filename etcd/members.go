package etcd

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// MemberHealth is what one member says about itself.
type MemberHealth struct {
	ClientURL string `json:"client_url"`
	Answers   bool   `json:"answers"`
	Leader    bool   `json:"leader"` // this member is the raft leader
	Error     string `json:"error,omitempty"`
}

// Health asks each member at clientURLs directly, not through the cluster,
// so a member that is down shows as down and the leader shows as the member
// whose own id is the leader it reports.
func Health(ctx context.Context, cli *clientv3.Client, clientURLs []string) []MemberHealth {
	out := make([]MemberHealth, len(clientURLs))
	for i, u := range clientURLs {
		out[i].ClientURL = u
		// The client retries a member that is down until the deadline, so
		// the deadline is how long a down member takes to show as down.
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cli.Status(cctx, u)
		cancel()
		if err != nil {
			out[i].Error = err.Error()
			continue
		}
		out[i].Answers = true
		out[i].Leader = st.Header != nil && st.Leader != 0 && st.Header.MemberId == st.Leader
	}
	return out
}

// Leader returns the client URL of the member that leads now, or "".
func Leader(ctx context.Context, cli *clientv3.Client, clientURLs []string) string {
	for _, h := range Health(ctx, cli, clientURLs) {
		if h.Leader {
			return h.ClientURL
		}
	}
	return ""
}
