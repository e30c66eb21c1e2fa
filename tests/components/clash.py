"""Its tool `tally_sync_increment` collides with `counter`'s `sync_increment` of `tally` in probe.py."""

from statefulmcp import Stateful, component, tool


@component(name="tally_sync")
class TallySync(Stateful):
    @tool
    def increment(self) -> int:
        return 0
