"""The one typed model shared by the state machine, the scheduler, the API and the agents.

- `states`: every closed set of names (allocation state, desired state, ...) as `StrEnum`s.
- `spec`: the job spec, one frozen dataclass per section, with the one set of defaults;
  `spec_parse.parse_job_spec` checks untrusted input into it.
- `resources`: amounts of capacity (`Resources`, `Quota`, `Usage`).
- `records`: the replicated rows (`Job`, `Allocation`, `Node`, `Deployment`, `JobVersion`).
- `messages`: what controllers and agents say to each other.
- `errors`: `Rejection`, the one error a check raises.

Nothing here imports from another `hacontrol` package.
"""
