"""Reports of a run, rendered from its RunSummary: summary.json for machines, report.md for CI
annotations, report.html (with every drawing in svg.py), the console table; and the nightly trend."""
