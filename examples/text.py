"""A stateless utility: module-level @tool functions form a component named after the file."""

from statefulmcp import tool


@tool
def word_count(text: str) -> int:
    """How many whitespace-separated words `text` has."""
    return len(text.split())


@tool
async def slugify(text: str, separator: str = "-") -> str:
    """Lower-case `text` and join its words with `separator`."""
    return separator.join(word.lower() for word in text.split())
