"""The embedded Kubernetes API server: real HTTP on 127.0.0.1 for the official client, kubectl
and kopf. See docs/apiserver.md.

`ApiServer` starts one (in its own process by default) and is the handle tests use;
`serve_forever` runs one in the foreground (`operatord apiserver`). `operatord.testing`
re-exports both: that is the stable import for users.
"""

from operatord.apiserver.process import ApiServer, FaultsClient, serve_forever, write_kubeconfig

__all__ = ["ApiServer", "FaultsClient", "serve_forever", "write_kubeconfig"]
