"""Drive the Functions app's own handlers locally, the way the Functions host would.

The Functions host (Core Tools) cannot be installed on every machine, so this runner reads the
function definitions from ``function_app.app`` (routes, queue names, the timer schedule) and:
- serves the HTTP functions on ``http://HOST:PORT/api/...``;
- delivers queue messages to the queue functions with host.json's retry and poison rules;
- fires the timer function on its NCRONTAB schedule.
People with Core Tools can run ``func start`` instead; the handlers are the same.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from .. import config, ncrontab
from ..api.validation import MAX_BODY_BYTES
from ..config import QueueRules
from ..logs import get_logger
from ..state.clients import StorageClients

log = get_logger(__name__)


# --- the app's functions ------------------------------------------------------------------------


@dataclass
class HttpFunction:
    name: str
    pattern: re.Pattern
    methods: frozenset[str]
    handler: Callable[[func.HttpRequest], func.HttpResponse]


_functions_cache: dict[int, list] = {}


def functions_of(app: func.FunctionApp) -> list:
    """The app's functions; cached, because FunctionApp.get_functions() may run only once per app."""
    if id(app) not in _functions_cache:
        _functions_cache[id(app)] = app.get_functions()
    return _functions_cache[id(app)]


def user_function(app: func.FunctionApp, name: str) -> Callable:
    for fn in functions_of(app):
        if fn.get_function_name() == name:
            return fn.get_user_function()
    raise KeyError(f"no function named {name!r}")


class FunctionIndex:
    def __init__(self, app: func.FunctionApp):
        self.http: list[HttpFunction] = []
        self.queues: dict[str, Callable] = {}
        self.timers: list[tuple[str, str, Callable]] = []  # (name, schedule, handler)
        for fn in functions_of(app):
            trigger = fn.get_trigger()
            handler = fn.get_user_function()
            name = fn.get_function_name()
            if trigger.type == "httpTrigger":
                self.http.append(HttpFunction(name, _route_regex(trigger.route), frozenset(
                    m.value if hasattr(m, "value") else str(m) for m in trigger.methods), handler))
            elif trigger.type == "queueTrigger":
                self.queues[trigger.queue_name] = handler
            elif trigger.type == "timerTrigger":
                self.timers.append((name, trigger.schedule, handler))

    def match(self, method: str, path: str) -> tuple[HttpFunction | None, dict[str, str], bool]:
        """(function, route params, path known); path known with no function means 405."""
        known = False
        for f in self.http:
            m = f.pattern.fullmatch(path)
            if m:
                known = True
                if method in f.methods:
                    return f, m.groupdict(), True
        return None, {}, known


def _route_regex(route: str) -> re.Pattern:
    # A catch-all last segment may be empty, as in the host's (ASP.NET) routing: "console/{*path}" matches "console".
    out = re.sub(r"/\{\*(\w+)\}$", r"(?:/(?P<\1>.*))?", route)
    out = re.sub(r"\{\*(\w+)\}", r"(?P<\1>.*)", out)
    out = re.sub(r"\{(\w+)(:[^}]*)?\}", r"(?P<\1>[^/]+)", out)
    return re.compile(out)


def load_app() -> func.FunctionApp:
    import function_app

    return function_app.app


# --- HTTP ---------------------------------------------------------------------------------------


def _body_length(value: str | None) -> int | None:
    """The request's Content-Length (0 when absent); None when it is not a whole number of bytes."""
    if value is None or value.strip() == "":
        return 0
    text = value.strip()
    return int(text) if text.isdigit() else None


def make_http_server(index: FunctionIndex, host: str, port: int) -> ThreadingHTTPServer:
    def base() -> str:
        """This server's own address: request URLs (and the redirects and statusUrls made from them)
        never take the Host header a caller sent."""
        return f"http://{host}:{server.server_address[1]}"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _refuse(self, status: int, title: str, detail: str) -> None:
            self.close_connection = True  # the body, if any, is left unread
            body = json.dumps({"title": title, "status": status, "detail": detail}).encode()
            self._send(status, body, {"Content-Type": "application/problem+json"})

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            if self.headers.get("Transfer-Encoding"):  # its chunks would be read as the next request
                return self._refuse(411, "Length required", "Send the body with a Content-Length.")
            length = _body_length(self.headers.get("Content-Length"))
            if length is None:
                return self._refuse(400, "Bad request", "Content-Length must be a whole number of bytes.")
            if length > MAX_BODY_BYTES:  # refused before it is read, as the API's own limit
                return self._refuse(413, "Request body too large", f"At most {MAX_BODY_BYTES} bytes are accepted.")
            body = self.rfile.read(length) if length else b""
            if not parts.path.startswith("/api/"):
                return self._send(404, b'{"title":"Not found"}', {"Content-Type": "application/json"})
            fn, params, known = index.match(self.command, parts.path[len("/api/"):])
            if fn is None:
                status = 405 if known else 404
                return self._send(status, json.dumps({"title": "Method not allowed" if known else "Not found",
                                                      "status": status}).encode(), {"Content-Type": "application/problem+json"})
            req = func.HttpRequest(
                method=self.command,
                url=f"{base()}{self.path}",
                headers=dict(self.headers.items()),
                params=dict(parse_qsl(parts.query)),
                route_params=params,
                body=body,
            )
            res = fn.handler(req)
            headers = dict(res.headers)
            headers["Content-Type"] = res.mimetype + (f"; charset={res.charset}" if res.charset else "")
            self._send(res.status_code, res.get_body() or b"", headers)

        def _send(self, status: int, body: bytes, headers: dict) -> None:
            self.send_response(status)
            for k, v in headers.items():
                if k.lower() not in ("content-length", "connection"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        def log_message(self, fmt: str, *args) -> None:
            log.debug("http %s", fmt % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


# --- queues -------------------------------------------------------------------------------------


class Prefetch:
    """Messages received for a queue's workers but not taken yet: like the host, a worker fetches a
    batch (up to ``batchSize``, one per worker) in one request, and the others take from it."""

    def __init__(self, size: int):
        self.size = max(1, size)
        self.items: deque = deque()
        self.lock = threading.Lock()


class QueuePump:
    """Receives messages and calls the queue function; failures are retried, then poisoned."""

    def __init__(self, clients: StorageClients, queue_name: str, handler: Callable, rules: QueueRules,
                 lease_seconds: int = 600, prefetch: Prefetch | None = None):
        self.lease_seconds = lease_seconds  # how long a message stays invisible while a worker handles it
        self.queue = clients.queue(queue_name)
        self.poison = clients.queue(queue_name + config.POISON_SUFFIX)
        self.handler = handler
        self.rules = rules
        self.name = queue_name
        self.prefetch = prefetch or Prefetch(1)

    def _take(self):
        with self.prefetch.lock:
            if self.prefetch.items:
                return self.prefetch.items.popleft()
        page = self.queue.receive_messages(messages_per_page=self.prefetch.size,
                                           visibility_timeout=self.lease_seconds).by_page()
        received = list(next(page, []))
        if not received:
            return None
        with self.prefetch.lock:
            self.prefetch.items.extend(received[1:])
        return received[0]

    def handle_one(self) -> bool:
        """Receive and handle one message; False when the queue had nothing visible."""
        m = self._take()
        if m is None:
            return False
        msg = QueueMessage(id=m.id, body=m.content.encode("utf-8"), dequeue_count=m.dequeue_count,
                           pop_receipt=m.pop_receipt)
        try:
            self.handler(msg)
        except Exception:  # the host's behaviour: retry later, poison at the limit
            if m.dequeue_count >= self.rules.max_dequeue_count:
                log.exception("message %s failed %d times; moved to %s", m.id, m.dequeue_count, self.poison.queue_name)
                self.poison.send_message(m.content)
                self.queue.delete_message(m)
            else:
                log.exception("message %s failed (delivery %d); retried later", m.id, m.dequeue_count)
                self.queue.update_message(m, visibility_timeout=int(self.rules.visibility_timeout))
            return True
        self.queue.delete_message(m)
        return True

    def work(self, stop: threading.Event, idle_sleep: float) -> None:
        delay = 0.05
        while not stop.is_set():
            try:
                busy = self.handle_one()
            except Exception:  # storage hiccups must not kill the worker
                log.exception("queue %s: receive failed", self.name)
                busy = False
            if busy:
                delay = 0.05
            else:
                stop.wait(delay)
                delay = min(delay * 2, idle_sleep)


# --- timer --------------------------------------------------------------------------------------


def cron_next(schedule: str, after: datetime) -> datetime:
    """Next time an NCRONTAB expression ({second} {minute} {hour} {day} {month} {day-of-week}) fires after
    ``after``, read as the Functions host reads it (``exporter/ncrontab.py``)."""
    return ncrontab.parse(schedule).next_after(after)


def resolve_setting(value: str, env: dict) -> str:
    """Expand %NAME% app-setting references, as the host does for trigger arguments."""
    return re.sub(r"%(\w+)%", lambda m: env.get(m.group(1)) or {"EXPORT_SCHEDULE": config.DEFAULT_SCHEDULE}.get(m.group(1), ""), value)


def timer_schedule(name: str, schedule: str, env: dict) -> ncrontab.Schedule:
    """Timer function ``name``'s schedule with its %NAME% references resolved; ConfigurationError naming
    the setting (or the function) when the host would refuse it."""
    setting = re.fullmatch(r"%(\w+)%", schedule.strip())
    what = f"Setting {setting.group(1)}" if setting else f"The schedule of timer function {name}"
    return config.check_schedule(resolve_setting(schedule, env), what)


TIMER_RETRY_SECONDS = 60.0  # after the next time could not be computed (it is computed again then)


def timer_loop(schedule: ncrontab.Schedule | str, handler: Callable, stop: threading.Event, *,
               retry_seconds: float = TIMER_RETRY_SECONDS) -> None:
    """Fire ``handler`` at each time of the schedule until ``stop`` is set. Nothing ends this thread but
    ``stop``: a next time that cannot be computed is logged and tried again after ``retry_seconds``,
    and a handler that fails is logged (as the host does; the next tick comes as scheduled)."""
    while not stop.is_set():
        try:
            now = datetime.now(timezone.utc)
            parsed = ncrontab.parse(schedule) if isinstance(schedule, str) else schedule
            due = parsed.next_after(now)
        except Exception:
            log.exception("timer: the next time of schedule %r could not be computed; trying again in %.0f s",
                          getattr(schedule, "expression", schedule), retry_seconds)
            stop.wait(retry_seconds)
            continue
        if stop.wait(max(0.0, (due - now).total_seconds())):
            return
        try:
            handler(TimerRequest(past_due=False))
        except Exception:
            log.exception("timer function failed")


# --- the runner ---------------------------------------------------------------------------------


class LocalHost:
    """The whole app in one process: HTTP server, queue workers and timer, until ``stop()``."""

    def __init__(self, clients: StorageClients, app: func.FunctionApp | None = None, *, host: str = "127.0.0.1",
                 port: int = 7071, batch_workers: int = 8, run_workers: int = 2, timer: bool = True,
                 idle_sleep: float | None = None, env: dict | None = None, lease_seconds: int = 600):
        import os

        self.index = FunctionIndex(app or load_app())
        settings = env if env is not None else dict(os.environ)
        # refused at start, before anything listens or runs, as the host refuses a schedule it cannot read
        timers = [(name, timer_schedule(name, schedule, settings), handler)
                  for name, schedule, handler in self.index.timers] if timer else []
        self.rules = config.queue_rules()
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.server = make_http_server(self.index, host, port)
        self.url = f"http://{host}:{self.server.server_address[1]}/api"
        idle = idle_sleep if idle_sleep is not None else self.rules.max_polling_interval
        workers = {config.QUEUE_RUNS: run_workers, config.QUEUE_BATCHES: batch_workers}
        for queue_name, handler in self.index.queues.items():
            count = workers.get(queue_name, 1)
            prefetch = Prefetch(min(count, self.rules.batch_size))
            for i in range(count):
                pump = QueuePump(clients, queue_name, handler, self.rules, lease_seconds, prefetch)
                self.threads.append(threading.Thread(target=pump.work, args=(self.stop_event, idle),
                                                     name=f"{queue_name}-{i}", daemon=True))
        for name, parsed, handler in timers:
            self.threads.append(threading.Thread(target=timer_loop, args=(parsed, handler, self.stop_event),
                                                 name=f"timer-{name}", daemon=True))
        self.threads.append(threading.Thread(target=self.server.serve_forever, name="http", daemon=True))

    def start(self) -> "LocalHost":
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()
        for t in self.threads:
            t.join(timeout=30)

    def __enter__(self) -> "LocalHost":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
