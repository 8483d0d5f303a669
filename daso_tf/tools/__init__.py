"""Command-line tools (run as ``python -m daso_tf.tools.<name>``).

- ``replay``: replay a recorded reference training trajectory step by step in float64.
- ``report``: one-page HTML + PNG report of one or several run directories.
"""
