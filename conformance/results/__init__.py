"""Results people look at: saved reports read back, compared (`compare`) and published as a site (`site`).

This layer reads the JSON reports runs have written (`conformance-report.json`), never a cluster: it sits above
the report that writes them and below the command line that offers it.
"""
