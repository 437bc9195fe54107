"""Stage 3: results: JUnit writing and reading, events, classification, diff, statistics, verdict."""
