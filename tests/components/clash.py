"""Its tool `tally_sync_increment` collides with `counter`'s `sync_increment` of `tally` in probe.py."""

from statefulmcp import component, tool


@component(name="tally_sync")
class TallySync:
    @tool
    def increment(self) -> int:
        return 0
