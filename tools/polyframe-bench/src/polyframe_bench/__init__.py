"""``polyframe-bench``: what each framework costs on this machine (``make bench``)."""
