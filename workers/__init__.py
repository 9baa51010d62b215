"""RQ workers: drain jobs that turn pending events into contact counts."""
