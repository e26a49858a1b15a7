// Package uitest drives the dashboard in a real headless browser for
// tests: Chromium from Debian's package (scripts/install-deps.sh installs
// it), through the DevTools protocol.
package uitest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browserPath finds Chromium: RESHARD_BROWSER, or Debian's binary.
func browserPath() string {
	if p := os.Getenv("RESHARD_BROWSER"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// Browser starts a headless Chromium for one test and returns a context
// that runs chromedp actions in its tab. Without a browser the test skips
// and says why (make test installs Debian's chromium).
func Browser(t testing.TB) context.Context {
	t.Helper()
	path := browserPath()
	if path == "" {
		t.Skip("no Chromium here (make test installs Debian's 'chromium'; or set RESHARD_BROWSER)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1100),
		// Root may not use Chromium's sandbox; the page is our own.
		chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// Start the browser now, so a test's first action is not its start.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// Screenshot saves the whole page as a PNG in dir (RESHARD_ARTIFACTS when
// set, else the system's temp dir), so it outlives the test, and returns
// its path.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100) /* 100: PNG */)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("RESHARD_ARTIFACTS")
	if dir == "" {
		dir = os.TempDir()
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	t.Logf("screenshot: %s (%d KB)", path, len(png)/1024)
	return path
}

// Eval runs a JavaScript expression in the page and decodes its value.
func Eval[T any](t testing.TB, ctx context.Context, expr string) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// WaitFor polls a JavaScript condition in the page until it holds, or
// fails the test after d.
func WaitFor(t testing.TB, ctx context.Context, cond string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !Eval[bool](t, ctx, "!!("+cond+")") {
		if time.Now().After(deadline) {
			t.Fatalf("after %v the page does not satisfy %s", d, cond)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
