"""The queue workers: one router per queue, each with its poison handling beside it. The Functions
blueprint (``blueprints/workers.py``) and the local runner hand them the message text."""
