"""The Docker Engine API handlers: one module per resource, each with `routes(...)`."""
