"""A run's life, and the only place its status changes: started (``start``), claimed and planned
(``planning``), moved on and ended (``settle``), tagged (``tags``, ``membership``), cancelled
(``cancel``), retried (``retry``), found stuck (``stuck``), and started by the timer (``schedule``)."""
