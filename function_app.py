"""The Functions app: only wiring. The work lives in exporter/ as plain modules."""

import azure.functions as func

from exporter.blueprints import console, http_api, schedule, workers

app = func.FunctionApp()
app.register_functions(http_api.bp)
app.register_functions(workers.bp)
app.register_functions(schedule.bp)
app.register_functions(console.bp)
