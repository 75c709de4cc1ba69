"""A separate worker process for the kill test: the real queue workers of the local runner.
Started as ``python -m tests.worker_process`` from the repository root.

Test scaffolding only: the development key store lives in process memory, so the test hands the
connection's key to this process through WORKER_SECRETS (JSON {secret name: key}).
"""

import json
import os
import time

from exporter.config import load_settings
from exporter.devhost.local_runner import LocalHost
from exporter.services import build_services, set_services

services = build_services(load_settings())
for name, value in json.loads(os.environ["WORKER_SECRETS"]).items():
    services.secrets.set(name, value)
set_services(services)
host = LocalHost(services.clients, port=0, batch_workers=4, run_workers=1, timer=False, idle_sleep=0.2,
                 lease_seconds=int(os.environ.get("WORKER_LEASE_SECONDS", "3")))
host.start()
print("ready", flush=True)
while True:
    time.sleep(1)
