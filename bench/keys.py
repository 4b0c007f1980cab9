"""Names shared by the bench app and its driver."""

NAIVE_KEY = "bench:naive"
