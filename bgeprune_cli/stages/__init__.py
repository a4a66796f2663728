"""One module per pipeline stage; each exposes `run(...)`, read top to bottom, returning a summary dict."""
