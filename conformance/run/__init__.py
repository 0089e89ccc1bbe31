"""A run of the suite: its settings, session, recorded outcomes, output folders, diagnostics and interruptions."""
