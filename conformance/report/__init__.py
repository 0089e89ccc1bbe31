"""The report of a run: what was observed and judged, written as JSON for machines and Markdown for people."""
