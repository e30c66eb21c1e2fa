"""MCP over streamable HTTP and stdio, built on the official `mcp` SDK."""
