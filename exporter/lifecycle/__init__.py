"""A run's life, and the only place its status changes: started (``start``), claimed and planned
(``plan_status``), moved on and ended (``settle``), tagged (``tag_planning``; ``member_state``
records who Omnisend holds), cancelled (``cancel``), retried (``retry``), found stuck (``stuck``),
started by the timer (``schedule``), and deleted with its export (``history``)."""
