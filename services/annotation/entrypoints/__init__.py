"""The doors of the annotation service: HTTP API and page, the label-request consumer, the CLI."""
