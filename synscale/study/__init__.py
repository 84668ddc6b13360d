"""Study files: schema, loading with errors, expansion into a plan."""
