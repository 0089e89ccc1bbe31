"""A run of the suite: its settings, its session, its output folders, diagnostics and interruptions."""
