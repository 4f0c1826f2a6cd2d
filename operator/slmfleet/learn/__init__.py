"""The learning loop: logged decisions joined to outcomes become calibrators, threshold
recommendations with guarantees, re-learned routing examples and reviewable proposals.

Pure functions over outcome records (``outcomes``); the CLI (``slmfleet calibrate``,
``slmfleet learn``) and the operator's learning loop (``controller/learning.py``) are the
shells. See docs/learning.md.
"""
