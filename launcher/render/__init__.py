"""Everything printed for people: Rich tables and bars on the terminal, the status page.

Each module renders one result object (a plan's JSON, an inventory, an attempt) and computes
nothing of its own. Renderers sit at the bottom of the import graph next to `launcher.units`:
the CLI, the runtime and the control API import them, they import no stage above them.
"""
