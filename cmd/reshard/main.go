// Command reshard runs a vnode-sharded PostgreSQL metadata tier and
// reshards it online.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "reshard:", err)
		os.Exit(1)
	}
}
