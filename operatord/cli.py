"""The `operatord` console script: run, diff, check-config, finalizers, apiserver, demo."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from operatord.config import OVERRIDES


def _add_overrides(p: argparse.ArgumentParser) -> None:
    """--config, --kubeconfig (run only) and the override flags, each also an OPERATORD_* var."""
    p.add_argument(
        "--config",
        default=None,
        help="path of the operatord YAML config (env OPERATORD_CONFIG)",
    )
    group = p.add_argument_group(
        "overrides", "each beats its OPERATORD_* variable, which beats the config file"
    )
    for o in OVERRIDES:
        group.add_argument(
            o.flag,
            dest=o.dest,
            default=None,
            metavar=o.kind.upper(),
            help=f"{o.help} (env {o.env})",
        )


def _add_quickstart(p: argparse.ArgumentParser) -> None:
    """A handler file instead of --config, with the types as flags (operatord.quickstart)."""
    p.add_argument(
        "handler_file",
        nargs="?",
        default=None,
        metavar="HANDLER.py[:NAME]",
        help="run a one-file operator without a config file: its types come from --parent/"
        "--child or from PARENT/CHILDREN declared in the file",
    )
    p.add_argument("--parent", default=None, metavar="APIVERSION/KIND", help="the parent type")
    p.add_argument(
        "--child",
        dest="children",
        action="append",
        default=[],
        metavar="APIVERSION/KIND",
        help="a child type (repeat for more)",
    )
    p.add_argument("--name", default=None, help="the operator's name (default: <kind>-operator)")


def _config_path(p: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """The --config file, or a `QuickStart` for a handler file given instead."""
    quick = getattr(args, "handler_file", None)
    extra = (
        getattr(args, "parent", None)
        or getattr(args, "children", None)
        or getattr(args, "name", None)
    )
    if quick:
        if args.config:
            p.error("give either a handler file or --config, not both")
        from operatord.quickstart import QuickStart

        return QuickStart(quick, args.parent, tuple(args.children), args.name)
    if extra:
        p.error("--parent, --child and --name go with a handler file: operatord run handlers.py")
    path = args.config or os.environ.get("OPERATORD_CONFIG")
    if not path:
        p.error("--config (or OPERATORD_CONFIG) is required, or a handler file: run handlers.py")
    return path


def _flags(args: argparse.Namespace) -> dict[str, str | None]:
    return {o.dest: getattr(args, o.dest, None) for o in OVERRIDES}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="operatord", description="Run Kubernetes operators written in Python."
    )
    from operatord import __version__

    p.add_argument("--version", action="version", version=f"operatord {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator daemon")
    _add_overrides(run)
    _add_quickstart(run)
    run.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig file (env OPERATORD_KUBECONFIG; default: in-cluster, then $KUBECONFIG "
        "or ~/.kube/config)",
    )

    diff = sub.add_parser(
        "diff",
        help="show every write `run` would make now, as a dry run (exit 0 same, 1 changes, "
        "2 error)",
    )
    _add_overrides(diff)
    diff.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig file (env OPERATORD_KUBECONFIG; default as for run)",
    )
    diff.add_argument(
        "--parent", default=None, metavar="NAMESPACE/NAME", help="diff this parent only"
    )
    diff.add_argument(
        "--controller", default=None, metavar="NAME", help="diff this controller only (its name)"
    )
    diff.add_argument(
        "-o",
        "--output",
        choices=("diff", "json"),
        default="diff",
        help="unified diffs (default) or one JSON plan",
    )

    chk = sub.add_parser("check-config", help="validate a config and import its handler")
    _add_overrides(chk)
    _add_quickstart(chk)
    chk.add_argument(
        "--show", action="store_true", help="print the effective config (after overrides)"
    )

    fin = sub.add_parser(
        "finalizers",
        help="list the parents blocked on the operator's finalizer; --remove releases them",
        description="List the parents that carry the operator's finalizer and are being "
        "deleted (they stay until it is removed). With --remove, remove the finalizer from "
        "them: their finalize will then not run. For uninstalling, and for parents left behind "
        "by an operator that is gone or was renamed.",
    )
    _add_overrides(fin)
    fin.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig file (env OPERATORD_KUBECONFIG; default: in-cluster, then $KUBECONFIG "
        "or ~/.kube/config)",
    )
    fin.add_argument(
        "--finalizer",
        default=None,
        help="the finalizer to look for instead of the config's operatord.io/<name> (e.g. "
        "the one of an earlier name)",
    )
    fin.add_argument(
        "--all",
        dest="include_live",
        action="store_true",
        help="also the parents that are not being deleted (before an uninstall: their "
        "deletion would hang once the operator is gone)",
    )
    fin.add_argument(
        "--remove",
        action="store_true",
        help="remove the finalizer from the listed parents; their finalize will NOT run",
    )

    api = sub.add_parser("apiserver", help="run the embedded Kubernetes API server on 127.0.0.1")
    api.add_argument("--port", type=int, default=0, help="port to listen on (default: a free port)")
    api.add_argument(
        "--kubeconfig-out", default=None, help="write a kubeconfig for the server here"
    )

    demo = sub.add_parser("demo", help="embedded API server + example operator + sample parents")
    demo.add_argument("--parents", type=int, default=30, help="how many sample parents to create")
    demo.add_argument("--workers", type=int, default=2, help="worker processes")
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the API server and the operator running after the tour, for kubectl; "
        "Ctrl-C stops them",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        from operatord.daemon import run

        kubeconfig = args.kubeconfig or os.environ.get("OPERATORD_KUBECONFIG") or None
        return run(_config_path(parser, args), kubeconfig=kubeconfig, flags=_flags(args))
    if args.command == "diff":
        from operatord.diff import main as diff_main

        kubeconfig = args.kubeconfig or os.environ.get("OPERATORD_KUBECONFIG") or None
        if not args.config:  # its --parent is a parent to diff, not a one-file operator's type
            parser.error("operatord diff needs --config FILE")
        return diff_main(
            args.config,
            kubeconfig=kubeconfig,
            flags=_flags(args),
            parent=args.parent,
            controller=args.controller,
            output=args.output,
        )
    if args.command == "check-config":
        from operatord.config import check_config_command

        return check_config_command(_config_path(parser, args), show=args.show, flags=_flags(args))
    if args.command == "finalizers":
        from operatord.finalizers import finalizers_command

        return finalizers_command(
            _config_path(parser, args),
            args.kubeconfig or os.environ.get("OPERATORD_KUBECONFIG") or None,
            flags=_flags(args),
            finalizer=args.finalizer,
            include_live=args.include_live,
            remove=args.remove,
        )
    if args.command == "apiserver":
        from operatord.testing import serve_forever

        return serve_forever(port=args.port, kubeconfig_out=args.kubeconfig_out)
    if args.command == "demo":
        from operatord.demo import main as demo_main

        return demo_main(parents=args.parents, workers=args.workers, keep=args.keep)
    return 2


if __name__ == "__main__":
    sys.exit(main())
