"""The local development host: the runner that drives the app's handlers as the Functions host would,
and the command line that manages the app through its HTTP API. Not deployed code paths: the
Functions host runs the blueprints in Azure."""
