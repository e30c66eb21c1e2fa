"""A module with no components."""

VALUE = 1
