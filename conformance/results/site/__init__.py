"""The `site` command: saved reports published as a static site (an overview matrix, a page per run, history, spec).

`model` groups reports into rows and runs, `tables` makes their cells into tables (plain data, no HTML); `pages`
renders them with the Jinja2 templates of `templates/` (package data, in the wheel) into a folder that opens from
file:// and from GitHub Pages: no scripts, no external fonts or styles, relative links only.
"""
