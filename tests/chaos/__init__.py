"""The chaos suite (issue 3): real workers, a real redis-server, injected faults, and a checker.

``pytest -m chaos`` runs it at CI size; ``python -m tests.chaos --full`` (``make chaos``) runs it at full size
and writes docs/reliability.md.
"""
