"""The Functions app: only wiring. The work lives in exporter/ as plain modules."""

import azure.functions as func

from exporter import telemetry
from exporter.blueprints import console, http_api, schedule, workers

telemetry.configure()  # OpenTelemetry to Azure Monitor when the app settings ask for it (exporter/telemetry.py)

app = func.FunctionApp()
app.register_functions(http_api.bp)
app.register_functions(workers.bp)
app.register_functions(schedule.bp)
app.register_functions(console.bp)
