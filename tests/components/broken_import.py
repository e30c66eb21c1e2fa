import statefulmcp_no_such_module  # type: ignore[import-not-found]  # noqa: F401
