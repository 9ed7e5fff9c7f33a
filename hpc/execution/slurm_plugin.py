"""Two corrections to Snakemake's Slurm executor plugin (2.8.0), installed in Snakemake's own
process by the Snakefile. Both show only where sacct answers, as on production sites.

States. The plugin learns that its jobs ended from ``sacct -X --format=JobIdRaw,State``, and compares
each state with its list of failure states as written. sacct writes a cancelled job's state as
``CANCELLED by <uid>`` (scancel by a user or an admin, a preemption, a node drained with
``scontrol``), which is not in that list, so plugin 2.8.0 takes such a job for a running one and
Snakemake waits for it forever. (The old Snakemake profile's status script had the same bug:
Snakemake-Profiles/slurm pull request 22.) Here every state is reduced to its first word, Slurm's
state name, before the plugin sees it.

Failed nodes. After a NODE_FAIL the plugin asks sacct for the job's node list and excludes those
nodes from every later submission (``sbatch --exclude``). Once Slurm has requeued the job, sacct
shows its new, pending record, whose node list reads ``None assigned``; the plugin then submits
every later job with ``--exclude=None assigned``, which sbatch refuses ("Unable to open file
assigned"), and the whole workflow fails. Here the plugin's set of failed nodes keeps node names
only.
"""

from __future__ import annotations

MARK = "_hpc_first_word_states"


def state_name(state: str) -> str:
    """Slurm's state name from sacct's State column: "CANCELLED by 0" -> "CANCELLED"."""
    return state.split()[0] if state.split() else state


class NodeNames(set):
    """A set of Slurm node names that ignores what is not one ("None assigned", blanks)."""

    def __init__(self, names=()):
        super().__init__()
        for name in names:
            self.add(name)

    def add(self, name) -> None:
        name = str(name).strip()
        if name and not any(c.isspace() for c in name) and name.lower() not in ("none", "(null)"):
            super().add(name)


def _failed_nodes_property() -> property:
    def get(executor):
        return executor.__dict__.setdefault("_hpc_failed_nodes", NodeNames())

    def put(executor, value):
        executor.__dict__["_hpc_failed_nodes"] = NodeNames(value)

    return property(get, put, doc="nodes to exclude from later submissions (node names only)")


def install() -> bool:
    """Wrap the plugin's status query so that it hands on state names, and keep its failed nodes to
    node names; False without the plugin."""
    try:
        import snakemake_executor_plugin_slurm as plugin
    except ImportError:
        return False
    original = getattr(plugin, "query_job_status", None)
    if original is None:
        return False
    if getattr(original, MARK, False):
        return True
    if hasattr(plugin, "Executor"):
        plugin.Executor._failed_nodes = _failed_nodes_property()

    async def query_job_status(command, logger):
        statuses, duration = await original(command, logger)
        if statuses is not None:
            statuses = {job: state_name(state) for job, state in statuses.items()}
        return statuses, duration

    setattr(query_job_status, MARK, True)
    query_job_status.__wrapped__ = original
    plugin.query_job_status = query_job_status
    return True
