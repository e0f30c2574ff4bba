"""Independent reference implementations and generators used by unit and end-to-end tests."""
