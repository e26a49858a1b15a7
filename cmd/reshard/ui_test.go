package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/ui/uitest"
)

// The dashboard during a split in a lab (issue 22), in a real headless
// browser: the job's phases advance on the page, the ring picture gives the
// moved range to the new pnode after the flip, and every router shows the
// new version.
func TestDashboardDuringSplit(t *testing.T) {
	parallelLab(t)
	b := uitest.Browser(t)
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "2", "--vnodes", "1000")
	ledger := filepath.Join(t.TempDir(), "ledger.jsonl")
	if out, stderr, ok := run(t, l.env(), append([]string{"load", "--duration", "2s", "--rate", "500", "--keys", "2000", "--ledger", ledger}, l.routerArgs()...)...); !ok {
		t.Fatalf("load: %s %s", out, stderr)
	}
	l.addShard(t, "3.moray", "1")

	// The dashboard, as an operator starts it.
	ui := exec.Command(binary, "ui", "--listen", "127.0.0.1:0", "--sample", "500ms")
	ui.Env = append(ui.Environ(), l.env()...)
	stdout, _ := ui.StdoutPipe()
	if err := ui.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ui.Process.Kill(); ui.Wait() })
	url, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("reshard ui printed %q: %v", url, err)
	}
	url = strings.TrimSpace(url)
	if err := chromedp.Do(b, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	uitest.WaitFor(t, b, `document.getElementById('ringcanvas').dataset.version && document.querySelectorAll('#routers tbody tr').length == 2
		&& document.querySelectorAll('#shardlist [data-shard]').length == 3`, 20*time.Second)
	before := uitest.Eval[string](t, b, `document.getElementById('ringcanvas').dataset.version`)
	// Vnode 0 is 1.moray's before the split, and the first a split in half
	// moves.
	if c := spanColor(t, b, "1.moray", 0); c[3] == 0 {
		t.Fatalf("1.moray's row is blank at vnode 0 before the split: %v", c)
	}

	type split struct {
		stderr string
		ok     bool
	}
	done := make(chan split, 1)
	go func() {
		_, stderr, ok := run(t, l.env(), "start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1")
		done <- split{stderr, ok}
	}()
	// Follow the page: which phase it shows running, until the job is
	// finished.
	var seen []string
	var res split
	deadline := time.Now().Add(4 * time.Minute)
	for finished := false; !finished; {
		select {
		case res = <-done:
			finished = true
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the split did not finish in 4 minutes")
		}
		for _, p := range uitest.Eval[[]string](t, b, `Array.from(document.querySelectorAll('#activejobs [data-phase][data-state="running"]')).map(e => e.dataset.phase)`) {
			if !slices.Contains(seen, p) {
				seen = append(seen, p)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !res.ok {
		t.Fatalf("split: %s", res.stderr)
	}
	id := regexp.MustCompile(`job (\S+) created`).FindStringSubmatch(res.stderr)[1]
	out, _, _ := run(t, l.env(), "status", id, "--json")
	var v statusView
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Job == nil {
		t.Fatalf("status %s: %v: %s", id, err, out)
	}
	j := v.Job
	t.Logf("phases the page showed running, in order: %v (the job's: %d phases)", seen, len(j.Phases))
	// The page showed the job moving through its phases, in the job's order.
	order := map[string]int{}
	for i, p := range j.Phases {
		order[p.Name] = i
	}
	if len(seen) < 3 {
		t.Errorf("the page showed only %v running", seen)
	}
	for i := 1; i < len(seen); i++ {
		if order[seen[i]] < order[seen[i-1]] {
			t.Errorf("the page showed %s running after %s", seen[i], seen[i-1])
		}
	}
	// The finished job, in the list, done.
	uitest.WaitFor(t, b, fmt.Sprintf(`(document.querySelector('#finished tr[data-job="%s"] .state') || {}).textContent === 'done'`, id), 10*time.Second)
	// The ring picture: after the flip, vnode 0's span is 3.moray's, and
	// no longer 1.moray's.
	uitest.WaitFor(t, b, fmt.Sprintf(`+document.getElementById('ringcanvas').dataset.version >= %d`, j.RingVersionAfter), 10*time.Second)
	if c := spanColor(t, b, "3.moray", 0); c[3] == 0 || !near(c, uitest.Eval[[]int](t, b, `window.reshardUI.rgbOf("3.moray")`)) {
		t.Errorf("3.moray's row at vnode 0 after the flip: %v", c)
	}
	if c := spanColor(t, b, "1.moray", 0); c[3] != 0 {
		t.Errorf("1.moray's row still drawn at vnode 0 after the flip: %v", c)
	}
	// The new shard's rows and size, once its statistics count them.
	uitest.WaitFor(t, b, `/≈[1-9][0-9,]* rows, [1-9]/.test(document.querySelector('[data-shard="3.moray"] .facts').textContent)`, 15*time.Second)
	// The hottest vnodes of a shard, on demand.
	uitest.Eval[bool](t, b, `(() => { document.querySelector('[data-shard="2.moray"] button').click(); return true; })()`)
	uitest.WaitFor(t, b, `document.querySelectorAll('[data-shard="2.moray"] .heat .hb').length > 0`, 15*time.Second)
	if txt := uitest.Eval[string](t, b, `document.querySelector('[data-shard="2.moray"] .heat').textContent`); !regexp.MustCompile(`vnode \d+.*[1-9][0-9,]* rows`).MatchString(txt) {
		t.Errorf("2.moray's vnode heat: %q", txt)
	}
	// Every router shows the new version, and its metrics were read.
	if n := uitest.Eval[int](t, b, `Array.from(document.querySelectorAll('#routers tbody tr')).filter(tr => tr.cells[2].textContent === 'unreachable').length`); n != 0 {
		t.Errorf("%d routers' metrics unreachable", n)
	}
	uitest.WaitFor(t, b, fmt.Sprintf(`Array.from(document.querySelectorAll('#routers tbody td.version')).every(td => +td.textContent >= %d)`, j.RingVersionAfter), 10*time.Second)
	t.Logf("ring version %s -> %d on the page; both routers at it", before, j.RingVersionAfter)
	uitest.Screenshot(t, b, "reshard-dashboard-split.png")
}

// spanColor is the pixel the page drew for pnode's row at vnode's span:
// red, green, blue, alpha.
func spanColor(t *testing.T, b context.Context, pnode string, vnode int) []int {
	t.Helper()
	return uitest.Eval[[]int](t, b, fmt.Sprintf(`(() => {
		const g = window.reshardUI.geometry, row = g.rows.indexOf(%q);
		if (row < 0) return [0, 0, 0, 0];
		const x = g.labelW + Math.floor(%d / g.per) * g.cellW + Math.floor(g.cellW / 2), y = row * g.rowH + Math.floor(g.rowH / 2);
		return Array.from(document.getElementById('ringcanvas').getContext('2d').getImageData(x, y, 1, 1).data);
	})()`, pnode, vnode))
}

func near(c, want []int) bool {
	for i := 0; i < 3; i++ {
		if d := c[i] - want[i]; d < -3 || d > 3 {
			return false
		}
	}
	return true
}

// From the page, with the token, an operator reverts a flipped job: the
// dashboard's process runs the revert, and the job ends reverted with the
// ring back on the origin.
func TestDashboardRevert(t *testing.T) {
	parallelLab(t)
	b := uitest.Browser(t)
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "1", "--vnodes", "256")
	ledger := filepath.Join(t.TempDir(), "ledger.jsonl")
	if out, stderr, ok := run(t, l.env(), append([]string{"load", "--duration", "1s", "--rate", "300", "--keys", "500", "--ledger", ledger}, l.routerArgs()...)...); !ok {
		t.Fatalf("load: %s %s", out, stderr)
	}
	l.addShard(t, "3.moray", "1")
	token := filepath.Join(t.TempDir(), "token")
	os.WriteFile(token, []byte("dashboard-secret\n"), 0o600)
	ui := exec.Command(binary, "ui", "--listen", "127.0.0.1:0", "--token-file", token)
	ui.Env = append(ui.Environ(), l.env()...)
	stdout, _ := ui.StdoutPipe()
	var uiLog bytes.Buffer
	ui.Stderr = &uiLog
	if err := ui.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ui.Process.Kill(); ui.Wait() })
	url, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("reshard ui: %v", err)
	}
	out, stderr, ok := run(t, l.env(), "start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1", "--complete", "manual", "--json")
	var j orchestrator.Job
	if !ok || json.Unmarshal([]byte(out), &j) != nil || j.State != orchestrator.Flipped {
		t.Fatalf("start --complete manual: %s %s", out, stderr)
	}
	if err := chromedp.Do(b, chromedp.Navigate(strings.TrimSpace(url))); err != nil {
		t.Fatal(err)
	}
	card := fmt.Sprintf(`#activejobs [data-job="%s"]`, j.ID)
	uitest.WaitFor(t, b, fmt.Sprintf(`document.querySelector('%s button[data-action="revert"]') && !document.getElementById('tokenbox').hidden`, card), 15*time.Second)
	// The operator types the token, presses revert and confirms.
	uitest.Eval[bool](t, b, fmt.Sprintf(`(() => { window.confirm = () => true; document.getElementById('token').value = 'dashboard-secret';
		document.querySelector('%s button[data-action="revert"]').click(); return true; })()`, card))
	uitest.WaitFor(t, b, fmt.Sprintf(`(document.querySelector('#finished tr[data-job="%s"] .state') || {}).textContent === 'reverted'`, j.ID), 2*time.Minute)
	out, _, _ = run(t, l.env(), "status", j.ID, "--json")
	var v statusView
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Job == nil || v.Job.State != orchestrator.Reverted || v.Job.Revert == nil {
		t.Fatalf("after the revert from the page: %s", out)
	}
	if rg := ringOf(t, l); rg.PnodeVnodeCount("3.moray") != 0 {
		t.Fatal("the ring still sends vnodes to 3.moray")
	}
	if !strings.Contains(uiLog.String(), `"action":"revert"`) {
		t.Errorf("the dashboard did not log the action:\n%s", uiLog.String())
	}
	verifyLedger(t, l, ledger)
	uitest.Screenshot(t, b, "reshard-dashboard-revert.png")
}
