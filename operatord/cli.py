"""The `operatord` console script: run, check-config, apiserver, demo."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="operatord", description="Run Kubernetes operators written in Python."
    )
    from operatord import __version__

    p.add_argument("--version", action="version", version=f"operatord {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator daemon")
    run.add_argument("--config", required=True, help="path of the operatord YAML config")
    run.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig file (default: in-cluster, then ~/.kube/config)",
    )

    chk = sub.add_parser("check-config", help="validate a config and import its handler")
    chk.add_argument("--config", required=True, help="path of the operatord YAML config")

    api = sub.add_parser("apiserver", help="run the embedded Kubernetes API server on 127.0.0.1")
    api.add_argument("--port", type=int, default=0, help="port to listen on (default: a free port)")
    api.add_argument(
        "--kubeconfig-out", default=None, help="write a kubeconfig for the server here"
    )

    demo = sub.add_parser("demo", help="embedded API server + example operator + sample parents")
    demo.add_argument("--parents", type=int, default=30, help="how many sample parents to create")
    demo.add_argument("--workers", type=int, default=2, help="worker processes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        from operatord.daemon import run

        return run(args.config, kubeconfig=args.kubeconfig)
    if args.command == "check-config":
        from operatord.config import check_config_command

        return check_config_command(args.config)
    if args.command == "apiserver":
        from operatord.testing import serve_forever

        return serve_forever(port=args.port, kubeconfig_out=args.kubeconfig_out)
    if args.command == "demo":
        from operatord.demo import main as demo_main

        return demo_main(parents=args.parents, workers=args.workers)
    return 2


if __name__ == "__main__":
    sys.exit(main())
