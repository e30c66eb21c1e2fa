"""The alternatives statefulmcp is measured against, each a small server run as a child process.

They use the official SDK exactly as a user would (`MCPServer` + its streamable HTTP app) under
uvicorn with the same settings as `statefulmcp serve`: uvloop, httptools, TCP_NODELAY, no access
log. Each prints `serving on URL` to stderr once it listens, like `statefulmcp serve`.
"""
