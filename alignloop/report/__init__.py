"""The report: one row per iteration, the figures, the HTML page."""
