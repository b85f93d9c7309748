"""The edges: each adapter translates one channel or API dialect to and from core, and nothing else."""
