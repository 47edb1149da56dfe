"""Grid files shipped with the suite."""
