"""The API server's service proxy carries the kubeconfig's credentials: a static token, or one an exec
credential plugin (aws eks get-token, gke-gcloud-auth-plugin, kubelogin) hands out."""

import json
import sys
from pathlib import Path

from kubernetes import config

from harness.fleet import service_proxy

PLUGIN = """import json
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": "from-the-plugin"}}))
"""


def kubeconfig(user: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }


def test_a_token_user_reaches_the_proxy_with_its_token() -> None:
    api = config.new_client_from_config_dict(kubeconfig({"token": "static-token"}))
    proxy = service_proxy(api, "shop", "shop", "http")
    assert proxy.headers == {"Authorization": "Bearer static-token"}
    assert proxy.url == "http://127.0.0.1:1/api/v1/namespaces/shop/services/shop:http/proxy"


def test_an_exec_plugin_user_reaches_the_proxy_with_the_plugin_s_token(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin)],
            "interactiveMode": "Never",
        }
    }
    api = config.new_client_from_config_dict(json.loads(json.dumps(kubeconfig(user))))
    assert service_proxy(api, "shop", "shop", "80").headers == {"Authorization": "Bearer from-the-plugin"}
