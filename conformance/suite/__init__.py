"""The conformance test modules: run them with `pytest --pyargs conformance.suite` (tox -e conformance).

Each module holds its cases as data (`CASES`) and one small test function; the plugin parametrizes the
function over (case, profile), and the checks (`checks`, `probe_checks`) do the probing, judging and recording.
"""
