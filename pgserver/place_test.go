package pgserver

import (
	"slices"
	"syscall"
	"testing"
)

// A process in a namespace is started through nsenter, which switches to
// the PostgreSQL user itself; on this machine's namespace the command runs
// as it is, with the user in the credential.
func TestPlaceCommand(t *testing.T) {
	cred := &syscall.Credential{Uid: 70, Gid: 71}
	in := Place{NS: "rsat-x", Addr: "10.231.1.5"}
	want := []string{"nsenter", "--net=/run/netns/rsat-x", "--setgid", "71", "--setuid", "70", "--", "postgres", "-D", "d"}
	if got := in.Argv(cred, "postgres", "-D", "d"); !slices.Equal(got, want) {
		t.Fatalf("argv %q, want %q", got, want)
	}
	if cmd := in.Command(cred, "postgres"); cmd.SysProcAttr.Credential != nil {
		t.Fatal("nsenter must start as root")
	}
	here := Place{}
	if got := here.Argv(cred, "postgres"); !slices.Equal(got, []string{"postgres"}) || here.Host() != "127.0.0.1" || in.Host() != "10.231.1.5" {
		t.Fatalf("argv %q host %q", got, here.Host())
	}
	if cmd := here.Command(cred, "postgres"); cmd.SysProcAttr.Credential != cred {
		t.Fatal("the credential is not the command's")
	}
}
