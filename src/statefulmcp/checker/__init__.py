"""The fault-injection checker: real replicas on a real PostgreSQL, real faults, and a proof.

It starts `statefulmcp serve` replicas as separate processes on a fresh database, runs clients
that spread calls over all of them and record every call, injects one kind of fault several
times at random moments (`kill -9` of an owner, `SIGSTOP` past the lease, an owner cut off from
PostgreSQL, PostgreSQL restarted, a rolling restart), then proves from the records and the
audit tables that no acknowledged update was lost, that no key ever had two owners committing,
and that counters are exact; and it reports how long each fault took to heal. See
docs/scaling.md, "Proving it: the fault-injection checker".

    python -m statefulmcp.checker --state postgresql://me@localhost/postgres --fault kill

From Python: `await check(url, directory, settings=Settings(fault="stop"))` returns a `Report`
whose `verdict.violations` is empty when every check passed. Not part of statefulmcp's public
API: a tool for testing a deployment and its components, not for serving them.
"""

from statefulmcp.checker.database import LocalPostgres, RestartCommand
from statefulmcp.checker.faults import FAULTS
from statefulmcp.checker.run import Report, Settings, check
from statefulmcp.checker.target import WORKLOAD, Target
from statefulmcp.checker.verdict import FaultEvent, Recovery, Verdict

__all__ = [
    "FAULTS",
    "WORKLOAD",
    "FaultEvent",
    "LocalPostgres",
    "Recovery",
    "Report",
    "RestartCommand",
    "Settings",
    "Target",
    "Verdict",
    "check",
]
