"""Command line: run the app locally (serve) and manage it through its own HTTP API.

    python -m exporter serve [--host 127.0.0.1] [--port 7071] [--workers 8] [--no-timer] [--allow-remote]
    python -m exporter connections add --name NAME --consent [--allow-contributors] [--max-profiles N]
                                       (the API key is read from OMNISEND_API_KEY or asked for)
    python -m exporter connections list | remove ID
    python -m exporter exports add --name NAME --connection ID --container C [--folder F] --segment S
                                   --map email=COLUMN [--map firstName=COLUMN ...] [--disabled]
    python -m exporter exports list | show ID | remove ID
    python -m exporter run EXPORT_ID [--wait] [--confirm] [--dry-run]
    python -m exporter runs list EXPORT_ID | show RUN_ID | cancel RUN_ID | retry RUN_ID | rejects RUN_ID [--out F]
    python -m exporter health [--wait SECONDS]
    (every management command takes --url, default EXPORTER_URL, and --token, default EXPORTER_TOKEN;
     list and show take --output table|json, connections add and exports add --output json|id)

Management commands act as a local Admin of the development mode (``serve``), the only mode in
which the app trusts an identity header that the platform did not set.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import shutil
import signal
import sys
import threading

from .. import __version__
from ..domain import MAPPABLE_FIELDS
from .api_client import DEFAULT_URL, ApiClient, print_counts, progress_line

# --- commands -----------------------------------------------------------------------------------


LOOPBACK = ("127.0.0.1", "localhost", "::1")


DEV_SECRETS_FILE = ".local/dev-secrets.json"


def _warn_about_missing_keys(services) -> None:
    """Say at start, by name, which connections cannot send: their key is in no store this app reads."""
    from ..state.secrets import SecretStoreError

    for conn in services.connections.list():
        try:
            services.secrets.get(conn.secret_name)
        except SecretStoreError as e:
            print(f"WARNING: connection {conn.display_name!r} ({conn.id}) cannot send: {e}", file=sys.stderr,
                  flush=True)


def cmd_serve(args) -> int:
    if args.host not in LOOPBACK and not args.allow_remote:
        print(f"Refusing to serve on {args.host}: the development mode trusts the identity header of every "
              "request, so anyone who can reach this address acts as an Admin. Serve on 127.0.0.1, or pass "
              "--allow-remote to accept that.", file=sys.stderr)
        return 2
    if args.host not in LOOPBACK:
        print(f"WARNING: serving on {args.host} in development mode: caller identities are not checked.",
              file=sys.stderr)
    from ..config import ConfigurationError, load_settings
    from ..logs import configure_logging
    from ..services import build_services, set_services
    from .local_runner import LocalHost

    configure_logging()
    env = dict(os.environ)
    env["EXPORTER_DEV_MODE"] = "1"  # serve is the development mode: see README
    os.environ["EXPORTER_DEV_MODE"] = "1"
    if not env.get("KEY_VAULT_URL"):  # keys outlive a restart of serve (owner-only file; never in Azure)
        env.setdefault("EXPORTER_DEV_SECRETS_FILE", DEV_SECRETS_FILE)
    try:
        settings = load_settings(env)  # a schedule the host would refuse is refused here, before anything runs
    except ConfigurationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    services = build_services(settings)
    services.timer_enabled = not args.no_timer  # /api/health waits for no tick of a timer that is off
    services.clients.ensure_resources()
    set_services(services)
    _warn_about_missing_keys(services)
    host = LocalHost(services.clients, host=args.host, port=args.port, batch_workers=args.workers,
                     timer=not args.no_timer, env=env, lease_seconds=args.lease_seconds)
    host.start()
    print(f"Serving the exporter API on {host.url} (development mode; Omnisend at {settings.omnisend_api_url})",
          flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    host.stop()
    return 0


def _read_key(args) -> str:
    """The API key: from standard input (--key-stdin), OMNISEND_API_KEY, or asked for at the terminal."""
    if getattr(args, "key_stdin", False):
        key = sys.stdin.readline().strip()
        if not key:
            raise SystemExit("--key-stdin: no API key on standard input (give it as one line).")
        return key
    if os.environ.get("OMNISEND_API_KEY"):
        return os.environ["OMNISEND_API_KEY"]
    if not sys.stdin.isatty():
        raise SystemExit("No Omnisend API key: there is no terminal to ask for it. Set OMNISEND_API_KEY, or pipe "
                         "the key in with --key-stdin.")
    return getpass.getpass("Omnisend API key: ")


def _add_connection(api: ApiClient, args) -> None:
    key = _read_key(args)
    body = {"displayName": args.name, "apiKey": key, "allowContributors": args.allow_contributors,
            "dataPrivacyConsent": args.consent}
    if args.max_profiles is not None:
        body["maxProfilesPerExport"] = args.max_profiles
    _print_created(api.request("POST", "connections", body), args)


def _print_created(created: dict, args) -> None:
    """What add made: JSON, or with ``--output id`` its id alone, for a shell variable (README)."""
    print(created["id"] if args.output == "id" else json.dumps(created, indent=2))


def _list_connections(api: ApiClient, args) -> None:
    found = api.request("GET", "connections")["connections"]
    if args.output == "json":
        print(json.dumps(found, indent=2))
        return
    for c in found:
        who = "admins and contributors" if c.get("allowContributors") else "admins only"
        print(f"{c['id']}  {c['displayName']}  ({who})")


def _remove_connection(api: ApiClient, args) -> None:
    api.request("DELETE", f"connections/{args.id}")
    print(f"Connection {args.id} removed; its exports are disabled.")


def _update_connection(api: ApiClient, args) -> None:
    body: dict = {}
    if args.name is not None:
        body["displayName"] = args.name
    if args.contributors is not None:
        body["allowContributors"] = args.contributors
    if args.max_profiles is not None:
        body["maxProfilesPerExport"] = args.max_profiles
    if args.key_stdin:
        body["apiKey"] = _read_key(args)
    if not body:
        raise SystemExit("Nothing to change: give --name, --key-stdin, --contributors/--admins-only or --max-profiles.")
    print(json.dumps(api.request("PATCH", f"connections/{args.id}", body), indent=2))
    if args.key_stdin:
        print("Omnisend accepted the new API key; it replaces the old one (workers read it within "
              "SECRET_CACHE_SECONDS, or at once when Omnisend refuses the old one).", file=sys.stderr)


def cmd_connections(args) -> int:
    actions = {"add": _add_connection, "list": _list_connections, "remove": _remove_connection,
               "update": _update_connection}
    actions[args.action](ApiClient.from_args(args), args)
    return 0


def _add_export(api: ApiClient, args) -> None:
    body = {"name": args.name, "connectionId": args.connection,
            "source": {"container": args.container, "folder": args.folder, "segment": args.segment},
            "mapping": dict(args.map), "enabled": not args.disabled}
    for option, name in (("max_removal_percent", "maxRemovalPercent"), ("max_rejected_percent", "maxRejectedPercent"),
                         ("tag", "tag")):
        if getattr(args, option) is not None:
            body[name] = getattr(args, option)
    if args.welcome_message:
        body["sendWelcomeMessage"] = True
    if args.consent_column:
        consent: dict = {"column": args.consent_column}
        for option, name in (("subscribed_values", "subscribedValues"), ("unsubscribed_values", "unsubscribedValues")):
            if getattr(args, option):
                consent[name] = [v.strip() for v in getattr(args, option).split(",") if v.strip()]
        if args.consent_changed_at_column:
            consent["changedAtColumn"] = args.consent_changed_at_column
        body["consent"] = consent
    elif args.subscribed_values or args.unsubscribed_values or args.consent_changed_at_column:
        raise SystemExit("--subscribed-values, --unsubscribed-values and --consent-changed-at-column need "
                         "--consent-column.")
    _print_created(api.request("POST", "exports", body), args)


def _list_exports(api: ApiClient, args) -> None:
    found = api.request("GET", "exports")["exports"]
    if args.output == "json":
        print(json.dumps(found, indent=2))
        return
    for x in found:
        state = "enabled" if x["enabled"] else f"disabled ({x.get('disabledReason') or 'by a user'})"
        print(f"{x['id']}  {x['name']}  segment {x['source']['segment']}  {state}")


def _show_export(api: ApiClient, args) -> None:
    print(json.dumps(api.request("GET", f"exports/{args.id}"), indent=2))


def _remove_export(api: ApiClient, args) -> None:
    api.request("DELETE", f"exports/{args.id}")
    print(f"Export {args.id} removed, with the history of its runs.")


def cmd_exports(args) -> int:
    actions = {"add": _add_export, "list": _list_exports, "show": _show_export, "remove": _remove_export}
    actions[args.action](ApiClient.from_args(args), args)
    return 0


def cmd_run(args) -> int:
    api = ApiClient.from_args(args)
    if args.dry_run:
        from .preview_cli import run_preview

        return run_preview(api, args.export_id, args.output)
    query = {"confirm": "true"} if args.confirm else None
    run = api.request("POST", f"exports/{args.export_id}/runs", params=query)
    print(f"Run {run['runId']} queued.")
    if not args.wait:
        return 0
    if sys.stdout.isatty():  # one line, updated in place
        run = _wait_with_bar(api, run["runId"])
    else:  # a log or a pipe: a plain line per poll
        run = api.wait_for_run(run["runId"], progress=lambda r: print("  " + progress_line(r), flush=True), poll=1)
    print_counts(run)
    return 0 if run["status"] in ("succeeded", "partiallySucceeded") else 1


def _wait_with_bar(api: ApiClient, run_id: str) -> dict:
    """A tqdm bar of the contacts counted (confirmed or failed) against those queued, with the status."""
    from tqdm import tqdm  # requirements-dev.txt: the CLI's own dependency, not the function app's

    size = shutil.get_terminal_size((100, 20))  # a terminal that reports no size (0x0) gets 100x20: tqdm would hide the bar
    with tqdm(total=0, unit=" contacts", ncols=size.columns, nrows=size.lines) as bar:
        def progress(r: dict) -> None:
            c = r["counts"]
            bar.total = max(c["queued"] or 0, 1)
            bar.n = c["confirmed"] + c["failed"]
            bar.set_description(r["status"])
            bar.set_postfix(confirmed=c["confirmed"], failed=c["failed"], rejected=c["rejected"], refresh=False)
            bar.refresh()

        return api.wait_for_run(run_id, progress=progress, poll=1)


def _field_column(text: str) -> tuple[str, str]:
    field, sep, column = text.partition("=")
    if not sep or not field.strip() or not column:
        raise argparse.ArgumentTypeError(f"expected FIELD=COLUMN (e.g. email=PrimaryEmail), got {text!r}")
    return field.strip(), column


def _url_option(parser: argparse.ArgumentParser, default=None) -> None:
    """--url (default EXPORTER_URL, else the local serve) and --token (default EXPORTER_TOKEN)."""
    if default is None:
        default = os.environ.get("EXPORTER_URL") or DEFAULT_URL
        token = os.environ.get("EXPORTER_TOKEN") or None
    else:
        token = default
    parser.add_argument("--url", default=default,
                        help=f"the exporter API (default: EXPORTER_URL, else {DEFAULT_URL})")
    parser.add_argument("--token", default=token,
                        help="an Entra access token for a deployed app, sent as Authorization: Bearer (default: "
                             "EXPORTER_TOKEN); get one with az account get-access-token --resource api://<app id>")


def _connection_add_options(add: argparse.ArgumentParser) -> None:
    add.add_argument("--name", required=True)
    add.add_argument("--allow-contributors", action="store_true")
    add.add_argument("--consent", action="store_true",
                     help="acknowledge that profile data, including personal data, leaves the platform for Omnisend")
    add.add_argument("--max-profiles", type=int, help="the Omnisend plan's contact limit per export")
    add.add_argument("--key-stdin", action="store_true",
                     help="read the API key from standard input (one line) instead of OMNISEND_API_KEY or a prompt")


def _export_add_options(add: argparse.ArgumentParser) -> None:
    add.add_argument("--name", required=True)
    add.add_argument("--connection", required=True)
    add.add_argument("--container", required=True)
    add.add_argument("--folder", default="")
    add.add_argument("--segment", required=True)
    add.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN", required=True, type=_field_column,
                     help="an Omnisend field and the segment column that feeds it; repeat it. email is required; "
                          f"the fields: {', '.join(api for api, _ in MAPPABLE_FIELDS)}")
    add.add_argument("--tag", help="the membership tag (default: the segment's name made safe for Omnisend)")
    add.add_argument("--consent-column", metavar="COLUMN",
                     help="set the email subscription status from this column (default: never change it)")
    add.add_argument("--subscribed-values", metavar="A,B", help="values meaning subscribed (default true,yes,1)")
    add.add_argument("--unsubscribed-values", metavar="A,B", help="values meaning unsubscribed (default false,no,0)")
    add.add_argument("--consent-changed-at-column", metavar="COLUMN",
                     help="when the consent changed (default: the refresh time)")
    add.add_argument("--welcome-message", action="store_true",
                     help="let Omnisend send its welcome message to contacts this export subscribes")
    add.add_argument("--disabled", action="store_true")
    add.add_argument("--max-removal-percent", type=int, metavar="PERCENT",
                     help="a run that would remove more of the current members stops before sending (default 50; "
                          "100: off)")
    add.add_argument("--max-rejected-percent", type=int, metavar="PERCENT",
                     help="a run with a larger share of rejected rows stops before sending (default 50; 100: off)")


def _connection_update_options(update: argparse.ArgumentParser) -> None:
    update.add_argument("--name", help="a new display name")
    update.add_argument("--key-stdin", action="store_true",
                        help="read a new API key from standard input (one line); it is checked with Omnisend first")
    who = update.add_mutually_exclusive_group()
    who.add_argument("--contributors", dest="contributors", action="store_true", default=None,
                     help="let contributors use it")
    who.add_argument("--admins-only", dest="contributors", action="store_false", help="admins only")
    update.add_argument("--max-profiles", type=int)


# A sentence and an example for each management action (python -m exporter <command> <action> --help).
HELP = {
    "connections add": ("Check an Omnisend API key with Omnisend, then store it as a connection.",
                        'OMNISEND_API_KEY=... python -m exporter connections add --name "EU store" --consent'),
    "connections list": ("The connections, with who may use them.", "python -m exporter connections list"),
    "connections remove": ("Remove a connection: its key is deleted, its exports are disabled.",
                           "python -m exporter connections remove 3f2a..."),
    "connections update": ("Change a connection's name, audience, limit or key (a new key is checked first).",
                           "python -m exporter connections update 3f2a... --key-stdin < new-key.txt"),
    "exports add": ("Save an export: a segment, a connection and the mapping. Saving does not run it.",
                    "python -m exporter exports add --name VIP --connection 3f2a... --container cdp --folder ci "
                    "--segment VIP --map email=PrimaryEmail --map firstName=FirstName"),
    "exports list": ("The exports, with their segment and whether they run on the schedule.",
                     "python -m exporter exports list"),
    "exports show": ("One export as the API has it (JSON).", "python -m exporter exports show 9b1c..."),
    "exports remove": ("Delete an export with the history of its runs.", "python -m exporter exports remove 9b1c..."),
}


def _resource_command(sub, name: str, help: str, fn, add_options, id_actions: tuple[str, ...],
                      more: dict | None = None) -> None:
    """A command with the actions ``add`` (its options set by ``add_options``), ``list`` and each of
    ``id_actions``, which take an ID. --url is accepted before or after the action (``connections
    --url U list`` and ``connections list --url U``)."""
    command = sub.add_parser(name, help=help, description=help)
    _url_option(command)
    actions = command.add_subparsers(dest="action", required=True)

    def action_parser(action: str) -> argparse.ArgumentParser:
        what, example = HELP[f"{name} {action}"]
        return actions.add_parser(action, help=what, description=what, epilog=f"example:\n  {example}",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)

    add = action_parser("add")
    add_options(add)
    add.add_argument("--output", choices=("json", "id"), default="json",
                     help="json (default): what was saved; id: its id alone, as in ID=$(python -m exporter ... --output id)")
    listing = action_parser("list")
    listing.add_argument("--output", choices=("table", "json"), default="table")
    parsers = [add, listing]
    for action in id_actions:
        parsers.append(action_parser(action))
        parsers[-1].add_argument("id")
    for action, options in (more or {}).items():  # actions on one ID, with options of their own
        parsers.append(action_parser(action))
        parsers[-1].add_argument("id")
        options(parsers[-1])
    for parser in parsers:
        _url_option(parser, argparse.SUPPRESS)
    command.set_defaults(fn=fn)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m exporter", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the app locally (HTTP API, queue workers, timer)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=7071)
    s.add_argument("--workers", type=int, default=8, help="upload workers (default 8)")
    s.add_argument("--no-timer", action="store_true",
                   help="do not fire the schedule (/api/health then waits for no tick)")
    s.add_argument("--lease-seconds", type=int, default=600,
                   help="how long a message a worker took stays hidden before another may take it (default 600, "
                        "as under the Functions host); a crashed app's messages come back after it")
    s.add_argument("--allow-remote", action="store_true",
                   help="serve on an address other than loopback (identities are not checked: anyone is an Admin)")
    s.set_defaults(fn=cmd_serve)

    _resource_command(sub, "connections", "manage Omnisend connections", cmd_connections, _connection_add_options,
                      ("remove",), {"update": _connection_update_options})
    _resource_command(sub, "exports", "manage exports", cmd_exports, _export_add_options, ("show", "remove"))

    r = sub.add_parser("run", help="run an export now")
    _url_option(r)
    r.add_argument("export_id")
    r.add_argument("--wait", action="store_true", help="show progress until the run ends, then the counts")
    r.add_argument("--confirm", action="store_true",
                   help="run even when the refresh is over the export's safety thresholds (a run they held says so)")
    r.add_argument("--dry-run", action="store_true",
                   help="preview: plan the latest refresh and say what a run would send, change and untag, and how "
                        "long it would take; nothing is sent")
    r.add_argument("--output", choices=("table", "json"), default="table", help="with --dry-run: the preview's format")
    r.set_defaults(fn=cmd_run)
    from .health_cli import add_health_command
    from .runs_cli import add_runs_command  # it uses this module's ApiClient

    add_runs_command(sub, _url_option)
    add_health_command(sub, _url_option)

    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return args.fn(args)
