// Command coredns is the real CoreDNS server, built from github.com/coredns/coredns with the plugins
// the local fleet's DNS needs, the way CoreDNS documents a build with a chosen plugin set: the plugins
// are imported and dnsserver.Directives lists them in the order of CoreDNS's own plugin.cfg.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/whoami"
)

func init() {
	dnsserver.Directives = []string{
		"reload", "bind", "ready", "health", "errors", "log", "cache", "hosts", "file", "forward", "whoami",
	}
}

func main() { coremain.Run() }
