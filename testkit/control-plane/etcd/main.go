// Command etcd is etcd's own server entry point, built from the module proxy
// beside the Kubernetes programs so that one `go build` makes the whole control
// plane.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
