"""Every aggregate's and every workflow's business rules: pure Python, no framework, no I/O.

One folder per aggregate or workflow (`orders/`, …); `rules.py` holds what they share.
"""
