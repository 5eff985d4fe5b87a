"""The rater page (`bsky-warehouse rate`): coders judge posts in the browser, straight into human_judgements,
and then see their own audit. Logic in core.py, HTTP in server.py, the page in static/index.html."""
