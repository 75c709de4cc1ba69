"""Uploading a planned run to Omnisend: fan out its plan (``dispatch``), send each contact batch
(``send``), learn its outcome (``check``), add and remove membership tags (``tags``); what a failed
call means is decided once (``outcomes``), and how a batch's outcome is counted too (``accounting``)."""
