"""What the loop trains: the Task contract (base), the one registry (registry.get_task) and one
module per task. A new objective is one module here, one config and one registry line
(docs/adding_an_objective.md)."""
