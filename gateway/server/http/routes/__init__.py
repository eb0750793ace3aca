"""One router per resource. Each route parses its transport's input, calls the service, shapes the
response; the service decides everything else."""
