import statefulmcp_no_such_module  # noqa: F401
