"""Training methods: each builds a TRL trainer from the resolved config."""
