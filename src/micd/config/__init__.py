"""The workflow's configuration: schema and value checks, typed --config strings."""
