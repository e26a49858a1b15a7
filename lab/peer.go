package lab

import (
	"context"

	"github.com/reshard/reshard/pgserver"
)

// pg runs the PostgreSQL binaries of one lab: pgserver's operations on
// the lab's peers.
type pg struct {
	*pgserver.Bin
	as runAs
}

func newPG(logs string) (*pg, error) {
	b, err := pgserver.New("", logs)
	if err != nil {
		return nil, err
	}
	return &pg{Bin: b, as: b.As}, nil
}

// server is the peer as pgserver runs it.
func (p Peer) server() pgserver.Server {
	return pgserver.Server{Name: p.Name, Port: p.Port, DataDir: p.DataDir, PID: p.PID, Place: pgserver.Place(p.Place)}
}

func (g *pg) writeConf(p Peer, syncName string, upstream *Peer) (bool, error) {
	var up *pgserver.Server
	if upstream != nil {
		s := upstream.server()
		up = &s
	}
	return g.WriteConf(p.server(), syncName, up)
}

func (g *pg) initPrimary(p Peer) error { return g.InitPrimary(p.server(), labSubnets) }

func (g *pg) initStandby(p Peer, upstream Peer) error {
	return g.InitStandby(context.Background(), p.server(), upstream.server(), pgserver.Backup{})
}

// start starts p, which may move to another port (pgserver.Bin.Start).
func (g *pg) start(ctx context.Context, p *Peer) error {
	s := p.server()
	err := g.Start(ctx, &s)
	p.Port, p.PID = s.Port, s.PID
	return err
}

func (g *pg) stop(p Peer) { g.Stop(p.server()) }

func (g *pg) kill(p Peer) { g.Kill(p.server()) }

func serves(ctx context.Context, p *Peer) (bool, error) {
	s := p.server()
	return pgserver.Serves(ctx, &s)
}

func postmasterPID(dataDir string) int { return pgserver.PostmasterPID(dataDir) }

func waitStreaming(ctx context.Context, upstream Peer, name string, sync bool) error {
	return pgserver.WaitStreaming(ctx, upstream.DSN(), upstream.Name, name, sync)
}
