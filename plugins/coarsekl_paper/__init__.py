"""coarsekl_paper: the paper's experiments, runnable by name (``coarsekl run paper-restore``)."""
